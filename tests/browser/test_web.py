"""The web page in a real headless Chromium, against a real cluster: sign up, sign out and in,
the plan previewed while typing, `2+2*2` computed under 300 ms delays with its nodes changing
state on the page (no reload) and the result 6, a long expression cancelled, the delays changed
by the admin, and the page at a phone's width. Screenshots go to build/<type>/screenshots/."""

import secrets
import time

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from api_helpers import admin_client, module_cluster, set_delays

TIMEOUT = 30


@pytest.fixture(scope="module")
def cl(calc_session):
    c = module_cluster(calc_session, "web_browser")
    try:
        yield c
    finally:
        c.close()


def console_errors(driver):
    """Script errors and policy violations; a refused request (a 4xx the page expects, such as a
    syntax error's 400) is logged too, and is not one."""
    return [e["message"] for e in driver.get_log("browser")
            if e["level"] == "SEVERE" and "Failed to load resource" not in e["message"]]


WIDER_THAN_SCREEN = """return [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1 && e.offsetParent !== null)
    .map(e => `${e.tagName}#${e.id}.${e.className.baseVal ?? e.className}`).slice(0, 8);"""


def wait(cl, driver, predicate, what, timeout=TIMEOUT):
    """Waits for predicate(driver) with a deadline; a failure names the browser's console errors."""
    try:
        return cl.wait_for(lambda: predicate(driver), timeout, what, interval=0.03)
    except AssertionError as e:
        raise AssertionError(f"{e}; browser console: {console_errors(driver)}") from None


def shown(driver, element_id):
    return driver.find_element(By.ID, element_id).is_displayed()


def text(driver, element_id):
    return driver.find_element(By.ID, element_id).text


def sign_in(cl, driver, login, password, button="sign-in"):
    wait(cl, driver, lambda d: shown(d, "auth"), "the sign-in form")
    for field, value in (("auth-login", login), ("auth-password", password)):
        el = driver.find_element(By.ID, field)
        el.clear()
        el.send_keys(value)
    if button == "enter":  # by keyboard: Enter in the password field submits the form (sign in)
        driver.find_element(By.ID, "auth-password").send_keys(Keys.ENTER)
    else:
        driver.find_element(By.ID, button).click()
    wait(cl, driver, lambda d: shown(d, "app") and text(d, "user-name") == login, f"{login} signed in")


def row_cell(driver, eid, cls):
    return driver.find_element(By.CSS_SELECTOR, f'#expr-rows tr[data-expression-id="{eid}"] td.{cls}').text


NODE_STATES = """return [...document.querySelectorAll('#detail-dag g[data-node-id]')]
    .map(g => [g.dataset.nodeId, g.dataset.state, g.classList.contains('critical')]);"""


def test_sign_up_compute_watch_and_cancel(cl, browser, shots):
    d = browser
    set_delays(cl, 300)
    login, password = f"web{secrets.token_hex(4)}", "correct horse"
    d.get(cl.apis[0].url + "/")
    shots("signed-out")
    # Sign up (which signs in), then out, then in again by keyboard.
    sign_in(cl, d, login, password, button="sign-up")
    d.find_element(By.ID, "sign-out").click()
    sign_in(cl, d, login, password, button="enter")
    # Live updates come over the event stream (GET /events with a ticket), not by polling.
    wait(cl, d, lambda d: d.find_element(By.ID, "stream-state").get_attribute("data-state") == "live",
         "the event stream online")
    # A user sees the delays but may not change them.
    wait(cl, d, lambda d: d.find_element(By.ID, "delay-mul").get_attribute("value") == "300", "the delays shown")
    assert not d.find_element(By.ID, "delay-mul").is_enabled()
    # The page is not reloaded from here on: a marker on window would be lost.
    d.execute_script("window.calcMarker = 42;")

    # The plan while typing: a syntax error with its position, then the plan.
    expr = d.find_element(By.ID, "expr-text")
    expr.send_keys("2+2*")
    wait(cl, d, lambda d: d.find_element(By.ID, "plan-error").get_attribute("data-position") == "5"
         and "Position 5" in text(d, "plan-error"), "the error's position")
    assert expr.get_attribute("aria-invalid") == "true"
    shots("syntax-error")
    expr.send_keys("2")
    wait(cl, d, lambda d: text(d, "plan-nodes") == "2" and text(d, "plan-depth") == "2"
         and text(d, "plan-eta") == "0.6 s" and text(d, "plan-error") == "", "the plan previewed")
    planned = d.find_elements(By.CSS_SELECTOR, "#plan-dag g[data-node-id]")
    assert len(planned) == 2 and all("critical" in g.get_attribute("class") for g in planned)
    shots("plan")

    # Compute: the graph of the new expression opens and its nodes change state in place.
    expr.send_keys(Keys.ENTER)
    wait(cl, d, lambda d: shown(d, "detail") and len(d.execute_script(NODE_STATES)) == 2, "the graph drawn")
    eid = int(text(d, "detail-id").lstrip("#"))
    d.execute_script("document.getElementById('detail-dag').scrollIntoView({block: 'center'});")
    history = {}
    shot_running = [False]

    def done(d):
        for node, state, _ in d.execute_script(NODE_STATES):
            seen = history.setdefault(node, [])
            if not seen or seen[-1] != state:
                seen.append(state)
            if state == "running" and not shot_running[0]:
                shot_running[0] = True
                shots("running")
        return (d.find_element(By.ID, "detail-summary").get_attribute("data-status") == "Ok"
                and all(states[-1] == "done" for states in history.values()))

    t0 = time.monotonic()
    wait(cl, d, done, "the expression done on the page")
    took = time.monotonic() - t0
    shots("done")
    assert d.execute_script("return window.calcMarker;") == 42, "the page was reloaded"
    assert all(states[-1] == "done" for states in history.values()), history
    # The root was seen waiting, then running or done, on the same page: it changed in place. (The
    # first node may be done before the graph is first drawn on a slow, sanitized build.)
    root = max(history, key=int)
    assert history[root][0] in ("blocked", "ready", "queued") and len(history[root]) >= 2, history
    assert "Result: 6" in text(d, "detail-summary")
    wait(cl, d, lambda d: row_cell(d, eid, "result") == "6" and row_cell(d, eid, "status") == "Ok", "the row's result")
    assert "2/2" in row_cell(d, eid, "progress")
    print(f"\n2+2*2 under 300 ms delays: done on the page {took:.2f}s after it was drawn; states {history}")

    # A long expression, cancelled from its row.
    long_text = "+".join(str(i) for i in range(1, 17))
    expr.send_keys(long_text, Keys.ENTER)
    wait(cl, d, lambda d: shown(d, "detail") and text(d, "detail-text") == long_text, "the long one opened")
    long_id = int(text(d, "detail-id").lstrip("#"))
    wait(cl, d, lambda d: row_cell(d, long_id, "status") in ("New", "In Progress"), "the long one running")
    d.find_element(By.CSS_SELECTOR, f'#expr-rows tr[data-expression-id="{long_id}"] button.cancel').click()
    wait(cl, d, lambda d: row_cell(d, long_id, "status") == "Cancelled", "the long one cancelled")
    wait(cl, d, lambda d: any(s == "cancelled" for _, s, _ in d.execute_script(NODE_STATES)),
         "its unfinished nodes shown cancelled")
    assert not d.find_element(By.CSS_SELECTOR, f'#expr-rows tr[data-expression-id="{long_id}"] button.cancel').is_displayed()
    shots("cancelled")
    r = requests.get(f"{cl.apis[0].url}/expression/{long_id}", timeout=10,
                     headers={"Authorization": f"Bearer {cl.api_client().login(login, password)}"})
    assert r.json()["expression"]["status"] == "Cancelled"

    # The agents and their workers.
    wait(cl, d, lambda d: len(d.find_elements(By.CSS_SELECTOR, '#agent-rows tr[data-alive="true"]')) == 2,
         "two agents alive")
    assert "2 alive" in text(d, "agents-summary")

    # A phone's width: nothing wider than the screen.
    d.set_window_size(390, 844)
    try:
        wait(cl, d, lambda d: d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth;"),
             "no horizontal scrolling at 390 px", timeout=5)
    except AssertionError:
        raise AssertionError(f"wider than a phone: {d.execute_script(WIDER_THAN_SCREEN)}") from None
    shots("phone")
    assert console_errors(d) == []


def test_the_admin_changes_a_delay(cl, browser, shots):
    d = browser
    set_delays(cl, 300)
    d.get(cl.apis[0].url + "/")
    sign_in(cl, d, cl.admin_login, cl.admin_password)
    assert text(d, "user-role") == "admin"
    mul = d.find_element(By.ID, "delay-mul")
    wait(cl, d, lambda d: mul.is_enabled() and mul.get_attribute("value") == "300", "the delays editable")
    mul.clear()
    mul.send_keys("1234")
    d.find_element(By.ID, "delays-save").click()
    wait(cl, d, lambda d: text(d, "delays-note").startswith("Saved"), "the delays saved")
    shots("delays")
    durations = {x["operation_name"]: x["operation_duration_ms"]
                 for x in admin_client(cl).get("/duration").json()["operation_durations"]}
    assert durations == {"+": 300, "-": 300, "*": 1234, "/": 300}
    # A value out of range is refused on the page, naming the field.
    mul.clear()
    mul.send_keys("70000")
    d.find_element(By.ID, "delays-save").click()
    wait(cl, d, lambda d: "65535" in text(d, "delays-note"), "the bad delay refused")
    assert admin_client(cl).get("/duration").json()["operation_durations"]
    # A refresh of the page keeps the session (the HttpOnly cookie), not the token: nothing is in storage.
    d.refresh()
    wait(cl, d, lambda d: shown(d, "app") and text(d, "user-name") == cl.admin_login, "signed in after a reload")
    assert d.execute_script("return localStorage.length + sessionStorage.length;") == 0
    assert d.execute_script("return document.cookie;") == ""  # the refresh cookie is HttpOnly
    assert console_errors(d) == []

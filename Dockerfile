# The image of calc-dbagent, calc-api and calc-agent (compose.yaml picks the program per service).
# Built from this repository and Debian 12 packages only:
#   docker build -t localhost/calc .                                  # Debian's official image
#   podman build --build-arg BASE=localhost/debian:12 -t localhost/calc .   # a local base image
ARG BASE=debian:12-slim

# --- build: the compiler and the -dev packages; nothing of this stage reaches the runtime image ---
FROM ${BASE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc libc6-dev make cmake pkg-config protobuf-c-compiler libprotobuf-c-dev libgrpc-dev \
      libmicrohttpd-dev librabbitmq-dev libpq-dev libjwt-dev libsodium-dev libjansson-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY proto proto
COPY schema schema
COPY common common
COPY parser parser
COPY dbagent dbagent
COPY api api
COPY agent agent
# BUILD_TESTING=OFF: the programs only, so neither cmocka nor Python is needed here.
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
 && cmake --build /build -j"$(nproc)" --target calc-dbagent calc-api calc-agent calc-plan

# --- runtime: the shared libraries the programs link, and nothing else ---
FROM ${BASE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libgrpc29 libprotobuf-c1 libmicrohttpd12 librabbitmq4 libpq5 libjwt0 libsodium23 libjansson4 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin calc
COPY --from=build /build/bin/calc-dbagent /build/bin/calc-api /build/bin/calc-agent \
                  /build/bin/calc-plan /usr/local/bin/
COPY deploy/healthcheck /usr/local/bin/calc-healthcheck
USER calc
WORKDIR /tmp
# Each program is PID 1 and stops cleanly on SIGTERM: the API finishes its requests, dbagent its
# calls, an agent hands back what it has not started and gives running nodes AGENT_GRACE_MS.
STOPSIGNAL SIGTERM
EXPOSE 8080 50051
CMD ["calc-api"]

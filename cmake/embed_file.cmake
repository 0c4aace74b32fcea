# Writes OUT: a C file defining `const char NAME[]`, the bytes of IN and a final NUL, so a binary
# carries the file and needs nothing at run time.
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
file(WRITE "${OUT}.tmp" "const char ${NAME}[] = {${bytes}0x00};\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)

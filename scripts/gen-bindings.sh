#!/usr/bin/env bash
# Generate the Kotlin and Swift bindings of chatvault-ffi into bindings/kotlin and bindings/swift.
#
#   bash scripts/gen-bindings.sh            # from the dev-profile library (fast, for checking)
#   PROFILE=release bash scripts/gen-bindings.sh
#   KOTLINC=/path/to/kotlinc bash scripts/gen-bindings.sh   # also compile-check the Kotlin and
#                                                          # run bindings/smoke/Smoke.kt on the JVM
#
# The Kotlin check needs a Kotlin compiler new enough for uniffi 0.32's output (2.x; Debian's
# `kotlin` 1.3 is not), a JDK (`java`) and JNA (JNA_JAR, default /usr/share/java/jna.jar from
# Debian's libjna-java). The Swift sources are generated only: no Swift compiler is checked here.
#
# uniffi reads the API from the compiled library's metadata (`generate --library`), so the
# bindings always match the library they are generated from; ship them with a library built
# from the same commit (bindings/README.md: Android with cargo-ndk, iOS as an xcframework).
# The generated sources are not committed (bindings/.gitignore): regenerate them.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${PROFILE:-dev}"
case "${PROFILE}" in
    dev) dir=debug; flags=() ;;
    release) dir=release; flags=(--release) ;;
    *) echo "gen-bindings: PROFILE must be dev or release" >&2; exit 2 ;;
esac

cargo build -p chatvault-ffi "${flags[@]}"
lib="target/${dir}/libchatvault_ffi.so"
[ -f "${lib}" ] || lib="target/${dir}/libchatvault_ffi.dylib"
[ -f "${lib}" ] || { echo "gen-bindings: no libchatvault_ffi in target/${dir}" >&2; exit 1; }

for lang in kotlin swift; do
    rm -rf "bindings/${lang}"
    cargo run -q -p chatvault-uniffi-bindgen --bin uniffi-bindgen -- \
        generate --no-format --library "${lib}" --language "${lang}" --out-dir "bindings/${lang}"
done
find bindings/kotlin bindings/swift -type f | sort

if [ -n "${KOTLINC:-}" ]; then
    JNA_JAR="${JNA_JAR:-/usr/share/java/jna.jar}"
    stdlib="$(dirname "$(dirname "$(readlink -f "${KOTLINC}")")")/lib/kotlin-stdlib.jar"
    out="$(mktemp -d)"
    trap 'rm -rf "${out}"' EXIT
    echo "gen-bindings: compiling the Kotlin bindings and the smoke program with ${KOTLINC}" >&2
    "${KOTLINC}" bindings/kotlin/uniffi/chatvault/chatvault.kt bindings/smoke/Smoke.kt \
        -cp "${JNA_JAR}" -d "${out}/smoke.jar"
    mkdir "${out}/run"
    java -Djna.library.path="$(dirname "${lib}")" \
        -cp "${out}/smoke.jar:${JNA_JAR}:${stdlib}" SmokeKt "${out}/run"
fi

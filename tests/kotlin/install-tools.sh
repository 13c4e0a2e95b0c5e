#!/usr/bin/env bash
# Installs what the JVM tests of the generated Kotlin bindings need (tests/tests/kotlin):
#   - Java (`java`), when there is none: Debian's default-jdk-headless (kotlinc runs on it);
#   - JNA, when /usr/share/java/jna.jar is missing: Debian's libjna-java;
#   - the Kotlin compiler from the npm registry (package kotlin-compiler) into
#     target/tools/kotlinc, unless that version is there already; npm itself from
#     Debian when missing.
# Idempotent: what is there is left alone. apt needs root (CI runs as root).
# Override the compiler's version with KOTLIN_COMPILER_VERSION.
set -euo pipefail
cd "$(dirname "$0")/../.."

version="${KOTLIN_COMPILER_VERSION:-2.2.20}"
dest=target/tools/kotlinc

# Installed already, in this version (the npm package's package.json says which)?
have_kotlinc() {
  [ -x "$dest/bin/kotlinc" ] && grep -q "\"version\": \"$version\"" "$dest/package.json" 2>/dev/null
}

apt_packages=()
command -v java >/dev/null 2>&1 || apt_packages+=(default-jdk-headless)
[ -f /usr/share/java/jna.jar ] || apt_packages+=(libjna-java)
if ! have_kotlinc && ! command -v npm >/dev/null 2>&1; then
  apt_packages+=(npm nodejs)
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "install-tools: apt-get install ${apt_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"
fi

if ! have_kotlinc; then
  echo "install-tools: kotlin-compiler@$version from npm into $dest"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "kotlin-compiler@$version" >/dev/null)
  tar -xzf "$tmp"/kotlin-compiler-*.tgz -C "$tmp"
  # The package unpacks as package/ with bin/kotlinc and lib/*.jar.
  mkdir -p "$(dirname "$dest")"
  rm -rf "$dest"
  mv "$tmp/package" "$dest"
fi

java -version 2>&1 | head -n 1
echo "install-tools: kotlinc $("$dest/bin/kotlinc" -version 2>&1 | sed -n 's/.*kotlinc-jvm \([^ ]*\).*/\1/p'), JNA /usr/share/java/jna.jar"

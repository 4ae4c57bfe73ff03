# Sourced by the bench scripts: installs the Debian packages named as arguments, stops
# the daemons Debian starts for them (they are not ours to measure), builds the gateway,
# upstream-api and the bare Pingora proxy (the floor) in release, and puts them first on
# PATH.
bash tests/deps.sh "$@"
for svc in nginx caddy haproxy; do
  case " $* " in
    *" $svc "*) systemctl stop "$svc" 2>/dev/null || service "$svc" stop 2>/dev/null || true ;;
  esac
done
echo "== release build (lto = fat, codegen-units = 1, mimalloc)"
cargo build --release -p gateway -p upstream-api --bins --example bare_pingora 2>&1 | tail -1
export PATH="$PWD/target/release:$PWD/target/release/examples:$PATH"

# Sourced by the bench scripts: installs the Debian packages named as arguments, stops
# the daemons Debian starts for them (they are not ours to measure), builds the gateway
# and upstream-api in release, and puts them first on PATH.
bash tests/deps.sh "$@"
for svc in nginx caddy haproxy; do
  case " $* " in
    *" $svc "*) systemctl stop "$svc" 2>/dev/null || service "$svc" stop 2>/dev/null || true ;;
  esac
done
echo "== release build (lto = fat, codegen-units = 1, mimalloc)"
cargo build --release -p gateway -p upstream-api 2>&1 | tail -1
export PATH="$PWD/target/release:$PATH"

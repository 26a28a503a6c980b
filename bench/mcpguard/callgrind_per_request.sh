#!/bin/sh
# User-space instructions per request of the guard and of nginx, counted by callgrind
# (docs/mcp-guard.md). Unlike wall-clock figures, the counts do not move when other processes
# share the cores. Each proxy runs under valgrind inside mcpguard_bench twice, with SMALL and
# LARGE requests of one reply kind; the difference over LARGE - SMALL requests cancels start-up
# and shutdown. Kernel work (syscalls, wake-ups) is not counted: the bench's CPU per request
# covers that.
#
# usage: callgrind_per_request.sh BIN_DIR [json|sse] [SMALL] [LARGE]
#   BIN_DIR holds perimeter-mcp-guard and mcpguard_bench (a build's bin/); nginx is $NGINX or
#   /usr/sbin/nginx.
set -eu
bin=$(cd "$1" && pwd)
reply=${2:-json}
small=${3:-1000}
large=${4:-5000}
nginx=${NGINX:-/usr/sbin/nginx}
work=$(mktemp -d "${TMPDIR:-/tmp}/mcpguard-callgrind-XXXXXX")
trap 'rm -rf "$work"' EXIT

# The bench starts each proxy by its path; these exec it under callgrind.
for target in guard nginx; do
  if [ "$target" = guard ]; then program="$bin/perimeter-mcp-guard"; else program="$nginx"; fi
  cat >"$work/$target" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file="$work/out.$target.\$\$" "$program" "\$@"
EOF
  chmod +x "$work/$target"
done

# instructions TARGET REQUESTS: the proxy's whole count over a bench run of REQUESTS requests.
instructions() {
  rm -f "$work"/out.*
  "$bin/mcpguard_bench" --guard "$work/guard" --nginx "$work/nginx" --targets "$1" \
    --replies "$reply" --concurrency 16 --rounds 1 --warmup 0 --requests "$2" --streams 0 \
    >"$work/bench.log" 2>&1 || { cat "$work/bench.log" >&2; exit 1; }
  # callgrind writes its totals when the proxy has exited, which may be after the bench returns.
  for _ in $(seq 100); do
    if grep -qs '^totals:' "$work"/out.*; then break; fi
    sleep 0.1
  done
  grep -h '^totals:' "$work"/out.* | awk '{ print $2 }'
}

per_request() {
  first=$(instructions "$1" "$small")
  second=$(instructions "$1" "$large")
  echo $(((second - first) / (large - small)))
}

guard=$(per_request guard)
nginx_count=$(per_request nginx)
echo "$reply reply, concurrency 16: instructions per request (callgrind, $small and $large" \
  "requests): guard $guard, nginx $nginx_count, ratio" \
  "$(awk -v g="$guard" -v n="$nginx_count" 'BEGIN { printf "%.2f", g / n }')"

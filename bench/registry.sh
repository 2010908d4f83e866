# Sourced by bench/run.sh and bench/profile.sh (bash): the benchmark's own
# docker-registry, on a free loopback port, storage and access log under
# $WORK/registry.  Needs WORK, PY and say(); sets REG and REGPID.
#   bench_registry_start   start it (the storage survives between runs)
#   bench_cleanup          unmount what is left under $WORK, stop the registry

bench_registry_start() {
	REGDIR=$WORK/registry
	mkdir -p "$REGDIR/storage"
	local port
	port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	REG=127.0.0.1:$port
	cat >"$REGDIR/config.yml" <<CONF
version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $REGDIR/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $REG
  secret: mlfs-bench
CONF
	: >"$REGDIR/access.log"
	docker-registry serve "$REGDIR/config.yml" >>"$REGDIR/access.log" 2>&1 &
	REGPID=$!
	for _ in $(seq 100); do
		curl -fsS "http://$REG/v2/" >/dev/null 2>&1 && break
		kill -0 "$REGPID" 2>/dev/null || break
		sleep 0.1
	done
	curl -fsS "http://$REG/v2/" >/dev/null || { say "the registry did not start: $REGDIR/access.log"; exit 1; }
}

bench_cleanup() {
	set +e
	# anything still mounted under the work dir (bench.py unmounts its own)
	awk -v w="$WORK/" '$3 == "fuse.mlfs" && index($2, w) == 1 {print $2}' /proc/mounts |
		while read -r m; do fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m"; done
	if [ -n "${REGPID:-}" ] && kill -0 "$REGPID" 2>/dev/null; then
		kill "$REGPID"
		for _ in $(seq 50); do kill -0 "$REGPID" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$REGPID" 2>/dev/null && kill -9 "$REGPID"
	fi
}

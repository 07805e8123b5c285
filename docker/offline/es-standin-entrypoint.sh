#!/bin/bash
# Run osmem-server and the header-rewriting proxy; if either exits, stop the other and exit
# non-zero so the container's restart policy takes over.
set -u
osmem-server -addr 127.0.0.1:9201 -no-stdin-watch &
osmem=$!
/opt/standin/bin/python /opt/standin/es_proxy.py --listen 0.0.0.0:9200 --upstream 127.0.0.1:9201 &
proxy=$!
trap 'kill -TERM $osmem $proxy 2>/dev/null; wait; exit 0' TERM INT
wait -n
echo "es-standin: a process exited; stopping" >&2
kill -TERM $osmem $proxy 2>/dev/null
wait
exit 1

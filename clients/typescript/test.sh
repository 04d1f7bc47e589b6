#!/bin/sh
# Builds and tests the TypeScript client (@dialsync/client). `make test` calls
# it; it works from a clean clone with the npm registry reachable, and needs
# Node >= 20 and nats-server (NATS_SERVER, default /usr/sbin/nats-server).
set -eu
cd "$(dirname "$0")"

# npm ci only when node_modules is missing or package-lock.json changed since
# the last install: it deletes and refetches everything, which is slow.
stamp=node_modules/.dialsync-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
	npm ci --no-audit --no-fund
	echo "$want" >"$stamp"
fi

# tsc builds incrementally (dist/*.tsbuildinfo) but never deletes the output
# of a removed source: drop compiled tests whose source is gone.
if [ -d dist/test ]; then
	for f in dist/test/*.js; do
		[ -e "$f" ] || continue
		src=test/$(basename "$f" .js).ts
		[ -e "$src" ] || rm -f "$f" "$f.map" "${f%.js}.d.ts"
	done
fi
npm run --silent build
npm test

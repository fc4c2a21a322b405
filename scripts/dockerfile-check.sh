#!/usr/bin/env bash
# Checks what can be checked of the container build without a Docker engine: builds, with
# CGO_ENABLED=0 as the Dockerfile does, exactly the packages its `go build` line names; checks
# that every binary and file the runtime stages copy exists, that every build target
# docker-compose.yml asks for is a stage, and that Prometheus scrapes only services the
# stack has.
set -euo pipefail
cd "$(dirname "$0")/.."

build_line=$(grep -E '^RUN .*go build' Dockerfile)
read -r -a pkgs <<<"$(grep -oE '\./cmd/[A-Za-z0-9_./-]+' <<<"$build_line" | tr '\n' ' ')"
[[ ${#pkgs[@]} -gt 0 ]] || { echo "dockerfile-check: no ./cmd/ packages on the go build line" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$out/" "${pkgs[@]}"

fail=0
while read -r bin; do
	[[ -x "$out/$bin" ]] || { echo "dockerfile-check: a stage copies /out/$bin, which the build line does not build" >&2; fail=1; }
done < <(grep -oE 'COPY --from=build /out/[A-Za-z0-9_-]+' Dockerfile | sed 's|.*/out/||')
while read -r src; do
	[[ -e "$src" ]] || { echo "dockerfile-check: a stage copies /src/$src, which is not in the repository" >&2; fail=1; }
done < <(grep -oE 'COPY --from=build /src/[^ ]+' Dockerfile | sed 's|.*/src/||')
while read -r target; do
	grep -qE "^FROM .* AS $target\$" Dockerfile || { echo "dockerfile-check: docker-compose.yml builds target $target, which Dockerfile lacks" >&2; fail=1; }
done < <(grep -oE '^\s+target: [A-Za-z0-9_-]+' docker-compose.yml | awk '{print $2}')
services=$(docker-compose -f docker-compose.yml config --services)
while read -r host; do
	[[ $host == localhost ]] && continue
	grep -qx "$host" <<<"$services" || { echo "dockerfile-check: Prometheus scrapes $host, which docker-compose.yml does not run" >&2; fail=1; }
done < <(grep -oE '"[a-z0-9_-]+:[0-9]+"' deploy/prometheus/prometheus.yml | tr -d '"' | cut -d: -f1)
[[ $fail == 0 ]] || exit 1
echo "dockerfile-check: built ${pkgs[*]} with CGO_ENABLED=0; stages, compose targets and scrape targets agree" >&2

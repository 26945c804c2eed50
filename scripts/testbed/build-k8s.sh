#!/usr/bin/env bash
# Builds the Kubernetes side of the end-to-end test bed from upstream Go modules at the versions
# pinned in versions.env: etcd, kube-apiserver, kube-controller-manager, kubectl and helm.
#
# Output: $METRICSHARD_CACHE/bin/<component>-<version> (default cache: ~/.cache/metricshard).
# A binary that is already there is not rebuilt, so a second run takes a second or two.
# The Go module and build caches live under the same cache directory unless GOMODCACHE/GOCACHE
# are set, so one directory holds everything worth keeping between CI runs.
#
# Usage: scripts/testbed/build-k8s.sh [--print-bin-dir]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${METRICSHARD_CACHE:-$HOME/.cache/metricshard}"
bin_dir="$cache/bin"

if [[ "${1:-}" == "--print-bin-dir" ]]; then
	echo "$bin_dir"
	exit 0
fi

log() { printf '[build-k8s %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v go >/dev/null || { log "go is not on PATH; install Go >= 1.26"; exit 1; }

mkdir -p "$bin_dir"
export GOMODCACHE="${GOMODCACHE:-$cache/go/mod}"
export GOCACHE="${GOCACHE:-$cache/go/build}"
# Never fetch another Go toolchain; the wrapper modules fit the installed one.
export GOTOOLCHAIN=local
export CGO_ENABLED=0
# -mod=readonly: the committed go.mod/go.sum of each wrapper are the pin; a drift is an error.
export GOFLAGS="-trimpath -buildvcs=false -mod=readonly"
export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"

# The wrapper go.mod files must name the same versions as versions.env.
check_pin() { # <go.mod> <module path> <version>
	if ! grep -Eq "^[[:space:]]*(require[[:space:]]+)?$2 $3( |$)" "$1"; then
		log "$1 does not require $2 $3 (versions.env); update the wrapper module (go get $2@$3 && go mod tidy)"
		exit 1
	fi
}
check_pin "$here/k8s-wrapper/go.mod" k8s.io/kubernetes "$KUBERNETES_VERSION"
check_pin "$here/etcd-wrapper/go.mod" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
check_pin "$here/helm-wrapper/go.mod" helm.sh/helm/v3 "$HELM_VERSION"

# build <wrapper dir> <ldflags> <package>=<binary name>...: builds every missing binary of one
# wrapper module in a single `go build`, so their shared packages compile once.
build() {
	local dir="$1" ldflags="$2"
	shift 2
	local pkgs=() names=() spec pkg name
	for spec in "$@"; do
		pkg="${spec%%=*}"
		name="${spec#*=}"
		if [[ -x "$bin_dir/$name" ]]; then
			log "cached: $bin_dir/$name"
		else
			pkgs+=("$pkg")
			names+=("$name")
		fi
	done
	((${#pkgs[@]})) || return 0
	local tmp start
	tmp="$(mktemp -d "$bin_dir/.build.XXXXXX")"
	# shellcheck disable=SC2064 # expand $tmp now: it is local to this call
	trap "rm -rf '$tmp'" EXIT
	start=$SECONDS
	log "building ${names[*]} in $(basename "$dir")"
	(cd "$dir" && go build -ldflags="-s -w $ldflags" -o "$tmp/" "${pkgs[@]}")
	local i
	for i in "${!pkgs[@]}"; do
		# go build names each output after the package's last path element, skipping a
		# major-version suffix (go.etcd.io/etcd/server/v3 -> server).
		pkg="${pkgs[$i]}"
		local base="${pkg##*/}"
		if [[ "$base" =~ ^v[0-9]+$ ]]; then
			base="${pkg%/*}"
			base="${base##*/}"
		fi
		mv -f "$tmp/$base" "$bin_dir/${names[$i]}"
	done
	rm -rf "$tmp"
	trap - EXIT
	log "built ${names[*]} in $((SECONDS - start))s"
}

total_start=$SECONDS
k8s_minor="${KUBERNETES_VERSION#v1.}"
k8s_minor="${k8s_minor%%.*}"
k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	k8s_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
	k8s_ldflags+=" -X $pkg.gitTreeState=archive -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build "$here/etcd-wrapper" "" "go.etcd.io/etcd/server/v3=etcd-$ETCD_VERSION"
build "$here/k8s-wrapper" "$k8s_ldflags" \
	"k8s.io/kubernetes/cmd/kube-apiserver=kube-apiserver-$KUBERNETES_VERSION" \
	"k8s.io/kubernetes/cmd/kube-controller-manager=kube-controller-manager-$KUBERNETES_VERSION" \
	"k8s.io/kubernetes/cmd/kubectl=kubectl-$KUBERNETES_VERSION"
build "$here/helm-wrapper" "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
	"helm.sh/helm/v3/cmd/helm=helm-$HELM_VERSION"

log "test bed binaries ready in $bin_dir ($((SECONDS - total_start))s)"

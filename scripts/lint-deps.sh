#!/usr/bin/env bash
# The module dependency rule (docs/architecture.md, "Modules and the dependency rule"): each folder of
# src/ may include only the project headers listed for it.  A new folder must be added here.
set -u
cd "$(dirname "$0")/../src" || exit 1
declare -A allow=(
  [util]="util"
  [cli]="cli util"
  [netlink]="netlink util"
  [nft]="nft backend util"
  [backend]="backend util"
  [policy]="policy backend netlink util"
  [relay]="relay backend policy netlink util ctx.h"
  [connect]="connect relay util"
  [proxy]="proxy relay util"
  [sandbox]="sandbox backend netlink nft util"
  [dns]="dns relay backend util"
  [capture]="capture relay util"
  [doctor]="doctor sandbox dns proxy nft netlink relay root backend util"
  [tty]="tty util"
  [root]="root backend netlink nft util"
  [fasttcp]="fasttcp relay policy backend util ctx.h"
)
bad=0
for f in $(find . -name '*.[ch]' | sed 's#^\./##' | sort); do
  dir=${f%%/*}
  [ "$dir" = "$f" ] && continue          # main.c and ctx.h at the top may include anything
  if [ -z "${allow[$dir]+x}" ]; then
    echo "lint-deps: src/$dir/ is not in scripts/lint-deps.sh: declare what it may include" >&2
    bad=1
    continue
  fi
  while IFS= read -r inc; do
    top=${inc%%/*}
    ok=0
    for a in ${allow[$dir]}; do [ "$top" = "$a" ] && ok=1; done
    if [ $ok -eq 0 ]; then
      echo "lint-deps: src/$f includes \"$inc\", but src/$dir/ may include only: ${allow[$dir]}" >&2
      bad=1
    fi
  done < <(sed -n 's/^#include "\([^"]*\)".*/\1/p' "$f")
done
exit $bad

#!/usr/bin/env bash
# Builds offline.html, the page template `dvc plots show/diff` fill (.dvc/config:
# plots.html_template): DVC's own page loads vega from a CDN and is blank offline; this one
# carries the official minified builds of the versions DVC's renderer (dvc-render) targets,
# fetched with `npm pack` and checked against the registry's sha512. Run it only to change
# versions; the built page is committed so that plots render with no network.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# name version sha512 (npm's "integrity") build file
packages=(
  "vega 5.20.2 qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw== build/vega.min.js"
  "vega-lite 5.2.0 Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw== build/vega-lite.min.js"
  "vega-embed 6.18.2 wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg== build/vega-embed.min.js"
)

scripts=""
for entry in "${packages[@]}"; do
  read -r name version sha512 file <<<"$entry"
  (cd "$work" && npm pack --silent "$name@$version" >/dev/null)
  tarball="$work/$name-$version.tgz"
  actual="$(openssl dgst -sha512 -binary "$tarball" | base64 -w0)"
  if [[ "$actual" != "$sha512" ]]; then
    echo "$tarball: sha512 $actual, expected $sha512" >&2
    exit 1
  fi
  mkdir -p "$work/$name"
  tar -xzf "$tarball" -C "$work/$name"
  body="$(cat "$work/$name/package/$file")"
  if [[ "$body" == *"</script"* ]]; then
    echo "$name $version $file contains </script: cannot be inlined" >&2
    exit 1
  fi
  license="$(cat "$work/$name/package/LICENSE")"
  scripts+="<!-- $name $version ($file), from the npm package $name:
$license
-->
<script>
$body
</script>
"
done

# DVC replaces {plot_divs} with one <div> per plot, each calling vegaEmbed. The page has no
# {scripts} placeholder: that is where DVC would put its CDN <script src=...> tags.
{
  cat <<'HEAD'
<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
HEAD
  printf '%s' "$scripts"
  cat <<'TAIL'
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
TAIL
} > "$work/offline.html"
mv "$work/offline.html" "$here/offline.html"
echo "wrote $here/offline.html"

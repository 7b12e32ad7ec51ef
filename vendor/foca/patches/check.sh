#!/bin/sh
# Caravan fork of foca: applies the upstreamable patches in this folder, in order, to foca 2.0.0 as
# published on crates.io, and runs foca's own unit tests after each one. The patched tree is left
# in a git repository (one commit per patch) under the folder given as the first argument (a
# fresh temporary folder by default): edit there, then regenerate the patches with
#   git -C <folder>/foca format-patch -o <this folder> HEAD~3
# See ../CARAVAN.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d)}
mkdir -p "$work/fetch/src"
cd "$work/fetch"
printf '[package]\nname = "fetch-foca"\nversion = "0.0.0"\nedition = "2024"\n\n[dependencies]\nfoca = "=2.0.0"\n' >Cargo.toml
: >src/lib.rs
cargo fetch -q
manifest=$(cargo metadata -q --format-version 1 | grep -o '"manifest_path":"[^"]*/foca-2\.0\.0/Cargo\.toml"' | head -n1 | cut -d'"' -f4)
src=$(dirname "$manifest")
rm -rf "$work/foca"
cp -R "$src" "$work/foca"
cd "$work/foca"
# The source tree as upstream keeps it: its own Cargo.toml, not the one crates.io normalised.
rm -f .cargo-ok .cargo_vcs_info.json Cargo.toml
mv Cargo.toml.orig Cargo.toml
git init -q
git add -A
git -c user.name=check -c user.email=check@example.invalid commit -q -m "foca 2.0.0 as published on crates.io"
echo "stock foca 2.0.0 in $work/foca"
cargo test -q --lib --features std,postcard-codec 2>&1 | grep 'test result'
for patch in "$here"/0*.patch; do
    git -c user.name=check -c user.email=check@example.invalid am -q "$patch"
    echo "applied $(basename "$patch")"
    cargo check -q --lib
    cargo test -q --lib --features std,postcard-codec 2>&1 | grep 'test result'
done

#!/usr/bin/env bash
# Builds the Chorus sample set: real music under free licences, taken from
# Debian packages (apt-get download + dpkg -x, nothing installed) and
# transcoded so every format the player supports is covered.
#
#   samples/build.sh            build into samples/out (skips when up to date)
#   samples/build.sh --force    rebuild even when samples/out looks complete
#   samples/build.sh --check    rebuild into a temp dir and compare byte for byte
#                               with samples/out and samples/SHA256SUMS
#   samples/build.sh --out DIR  build into DIR instead: a new folder, or one
#                               this script built before (it holds the mark
#                               file .chorus-sample-set); any other folder is
#                               refused and left untouched
#
# Needs: apt-get (for `apt-get download`), dpkg, ffmpeg, sha256sum.
# Output: the audio files, ATTRIBUTION.md, SHA256SUMS and the mark file in the
# out dir. A rebuild replaces only the files an earlier build listed in its
# SHA256SUMS: nothing this script did not create is ever removed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/out"
cache="$here/.cache"
mode=build
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --force) mode=force; shift ;;
    --check) mode=check; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "samples/build.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

for tool in ffmpeg dpkg apt-get sha256sum; do
  command -v "$tool" >/dev/null || {
    echo "samples/build.sh: '$tool' is missing; run scripts/setup (installs ffmpeg) first" >&2
    exit 1
  }
done

expected="$here/SHA256SUMS"

if [ "$mode" = check ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$0" --force --out "$tmp/a" >/dev/null
  "$0" --force --out "$tmp/b" >/dev/null
  diff -r "$tmp/a" "$tmp/b" && echo "two rebuilds are byte-identical"
  if diff "$expected" "$tmp/a/SHA256SUMS"; then
    echo "rebuild matches samples/SHA256SUMS"
  else
    echo "samples/build.sh: rebuild differs from samples/SHA256SUMS (different ffmpeg or source package?)" >&2
    echo "  ffmpeg: $(ffmpeg -version | head -n1)" >&2
    exit 1
  fi
  exit 0
fi

# --- whose folder is it? -------------------------------------------------------
mark=".chorus-sample-set"
if [ -e "$out" ] && [ ! -f "$out/$mark" ]; then
  # A sample set from before the mark file existed: the default folder inside
  # samples/ holding exactly what its own SHA256SUMS lists, and nothing else.
  legacy=no
  if [ "$(cd "$out" 2>/dev/null && pwd -P)" = "$here/out" ] && [ -f "$out/SHA256SUMS" ]; then
    listed=$( (awk '{print $2}' "$out/SHA256SUMS"; echo SHA256SUMS) | LC_ALL=C sort)
    present=$(cd "$out" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort)
    [ "$listed" = "$present" ] && legacy=yes
  fi
  if [ "$legacy" = yes ]; then
    printf 'made by Chorus samples/build.sh; rebuilding replaces the files SHA256SUMS lists\n' >"$out/$mark"
  else
    echo "samples/build.sh: $out exists and is not a sample set this script built (no $mark in it);" >&2
    echo "  refusing to write there. Name a new folder with --out, or leave --out out." >&2
    exit 3
  fi
fi

if [ "$mode" = build ] && [ -f "$out/SHA256SUMS" ] && (cd "$out" && sha256sum --quiet -c SHA256SUMS) 2>/dev/null; then
  echo "sample set up to date in $out"
  exit 0
fi

# --- sources -----------------------------------------------------------------
mkdir -p "$cache"
fetch_deb() { # name: download the package into the cache once, unpack it
  local name=$1
  if ! ls "$cache/${name}_"*.deb >/dev/null 2>&1; then
    echo "downloading Debian package $name"
    # apt-get download writes to the current directory; _apt may not be able
    # to write there when run as root, which only costs a warning.
    if ! (cd "$cache" && apt-get download -q "$name" 2>/dev/null); then
      echo "  package lists may be stale: running apt-get update" >&2
      if [ "$(id -u)" -eq 0 ]; then apt-get update -qq; else sudo apt-get update -qq; fi
      (cd "$cache" && apt-get download -q "$name")
    fi
  fi
  if [ ! -d "$cache/$name" ]; then
    local deb
    deb=$(ls "$cache/${name}_"*.deb | head -n1)
    rm -rf "$cache/$name.tmp" && dpkg -x "$deb" "$cache/$name.tmp" && mv "$cache/$name.tmp" "$cache/$name"
  fi
}
fetch_deb singularity-music
fetch_deb golang-github-hjfreyer-taglib-go-dev
sing="$cache/singularity-music/usr/share/games/singularity/music"
beat="$cache/golang-github-hjfreyer-taglib-go-dev/usr/share/gocode/src/github.com/hjfreyer/taglib-go/taglib/testdata/BeatThee.mp3"

# --- transcode -----------------------------------------------------------------
# The out folder is new (made here, marked at once) or marked as ours. The
# build goes to a scratch folder inside it, so nothing is written beside it.
if [ ! -e "$out" ]; then
  mkdir -p "$out"
  printf 'made by Chorus samples/build.sh; rebuilding replaces the files SHA256SUMS lists\n' >"$out/$mark"
fi
work="$out/.build.$$"
mkdir "$work"
trap 'rm -rf "$work"' EXIT

ALBUM="Endgame: Singularity"
ARTIST="Max McCracken"
# Flags that make every rebuild byte-identical: no encoder version strings,
# no random stream serials, no timestamps.
FFMPEG=(ffmpeg -hide_banner -loglevel error -nostdin -y)
BITEXACT=(-map_metadata -1 -fflags +bitexact -flags:a +bitexact)

sing_track() { # src title track# out [ffmpeg args...]
  local src=$1 title=$2 num=$3 dst=$4
  shift 4
  echo "  $dst"
  "${FFMPEG[@]}" -i "$sing/$src" -map 0:a "${BITEXACT[@]}" \
    -metadata "title=$title" -metadata "artist=$ARTIST" -metadata "album=$ALBUM" \
    -metadata "track=$num" -metadata "date=2008" "$@" "$work/$dst"
}

echo "building sample set in $out"
# MP3 CBR 320k, 44.1 kHz, ID3v2 tags and cover art: the original file as shipped.
echo "  beat-thee.mp3"
cp "$beat" "$work/beat-thee.mp3"
# Ogg Vorbis 48 kHz: the original stream, remuxed only to add tags.
sing_track "win/Apex Aleph.ogg" "Apex Aleph" 16 apex-aleph.ogg -c:a copy
# FLAC 16-bit 48 kHz.
sing_track "Awakening.ogg" "Awakening" 4 awakening.flac -c:a flac -sample_fmt s16 -compression_level 5
# ALAC 16-bit 44.1 kHz in MP4.
sing_track "Coherence.ogg" "Coherence" 6 coherence.m4a -c:a alac -sample_fmt s16p -ar 44100
# AAC 48 kHz in MP4 with the moov atom at the end (ffmpeg's default), which a
# streaming reader has to fetch before anything plays.
sing_track "Through Space.ogg" "Through Space" 13 through-space.m4a -c:a aac -b:a 192k
# MP3 VBR (LAME -V2) 48 kHz.
sing_track "Inevitable.ogg" "Inevitable" 9 inevitable.mp3 -c:a libmp3lame -q:a 2 -id3v2_version 3 -write_xing 1
# WAV 16-bit 44.1 kHz, the first 75 seconds.
sing_track "Deprecation.ogg" "Deprecation (excerpt)" 7 deprecation.wav -t 75 -c:a pcm_s16le -ar 44100

cp "$here/ATTRIBUTION.md" "$work/ATTRIBUTION.md"
(cd "$work" && sha256sum -- *.mp3 *.ogg *.flac *.m4a *.wav ATTRIBUTION.md | LC_ALL=C sort -k2 > SHA256SUMS)

# Swap in the new files; remove only files the previous build listed.
if [ -f "$out/SHA256SUMS" ]; then
  awk '{print $2}' "$out/SHA256SUMS" | while IFS= read -r old; do
    case "$old" in */*|.*|"") continue ;; esac
    [ -e "$work/$old" ] || rm -f -- "$out/$old"
  done
fi
for f in "$work"/*; do mv -f -- "$f" "$out/"; done
rmdir "$work"
trap - EXIT
if [ -f "$expected" ] && ! diff -q "$expected" "$out/SHA256SUMS" >/dev/null; then
  echo "warning: the sample set differs from samples/SHA256SUMS (ffmpeg: $(ffmpeg -version | head -n1));" >&2
  echo "         tests compare against local decodes, so they still hold" >&2
fi
echo "sample set ready: $(awk '{print $2}' "$out/SHA256SUMS" | grep -vc ATTRIBUTION) tracks, $(du -sh "$out" | cut -f1) in $out"

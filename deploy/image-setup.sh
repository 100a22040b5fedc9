#!/bin/sh
# What Hodei's image holds besides the binary, shared by the Dockerfile and scripts/hodei-image:
# an unprivileged user `hodei` (uid 10001) that runs the server, the agent and their local
# steps, and its data directory (the server's, or the agent's: each in its own container).
set -eu
useradd --uid 10001 --create-home --shell /bin/sh hodei
for dir in /var/lib/hodei; do
    mkdir -p "$dir"
    chown hodei:hodei "$dir"
    chmod 0700 "$dir"
done

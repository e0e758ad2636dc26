#!/bin/sh
# The `backup` service: create the stanza once, then a full backup every Sunday and a
# differential one every other day, at BACKUP_HOUR (UTC). Each run is logged; a failure is
# retried an hour later and shows in the BackupOld alert if it keeps failing.
set -u
until pgbackrest --stanza=tally stanza-create; do sleep 10; done
pgbackrest --stanza=tally check || true
[ -z "$(pgbackrest --stanza=tally info --output=json | grep -o '"label"')" ] \
  && pgbackrest --stanza=tally --type=full backup
while true; do
  now=$(date -u +%s)
  next=$(date -u -d "$(date -u +%F) ${BACKUP_HOUR:-3}:00" +%s)
  [ "$next" -le "$now" ] && next=$((next + 86400))
  sleep $((next - now))
  if [ "$(date -u +%u)" = 7 ]; then kind=full; else kind=diff; fi
  until pgbackrest --stanza=tally --type="$kind" backup; do sleep 3600; done
done

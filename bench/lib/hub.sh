# Shared by bench/fleet/run and bench/soak/run (sourced): starting iothubd for a benchmark.
# Callers set `iothubd` (the binary), `work` (their work directory), optionally
# `server_cpu` (an array prefix such as (taskset -c 0)), and define `log`.
# FLEET_HUB_ARGS adds iothubd options.

# The integer value of "KEY": N in the JSON file $2.
json_int() { sed -n "s/.*\"$1\": *\([0-9][0-9]*\).*/\1/p" "$2" | head -1; }

# Starts iothubd with data directory $1 and log file $2 on loopback with kernel-chosen ports
# (further iothubd options after them), waits until it serves, and sets launched_pid,
# launched_http, launched_mqtt_plain and launched_mqtt_tls. Exits the script if it does not
# come up.
launch_iothubd() {
  local data=$1 log_file=$2
  shift 2
  mkdir -p "$data"
  rm -f "$data/iothubd.json"
  # shellcheck disable=SC2086  # FLEET_HUB_ARGS is a list of options
  ${server_cpu[@]+"${server_cpu[@]}"} "$iothubd" --data-dir "$data" --bind 127.0.0.1 --hostname localhost \
    --https-port 0 --mqtt-port 0 --amqp-port 0 --http-port 0 --mqtt-plain-port 0 --log-level warn "$@" ${FLEET_HUB_ARGS:-} \
    >"$log_file" 2>&1 &
  launched_pid=$!
  for _ in $(seq 1 600); do
    if [[ -s $data/iothubd.json ]] && [[ $(json_int pid "$data/iothubd.json") == "$launched_pid" ]]; then break; fi
    kill -0 "$launched_pid" 2>/dev/null || { cat "$log_file" >&2; echo "run: iothubd exited" >&2; exit 1; }
    sleep 0.1
  done
  launched_http=$(json_int httpPort "$data/iothubd.json")
  launched_mqtt_plain=$(json_int mqttPlainPort "$data/iothubd.json")
  launched_mqtt_tls=$(json_int mqttPort "$data/iothubd.json")
  [[ -n $launched_http && -n $launched_mqtt_plain ]] || { echo "run: iothubd did not come up" >&2; exit 1; }
}

# Starts iothubd on loopback with kernel-chosen ports and a data directory in $work/hub,
# waits until it serves, and sets hub_pid, hub_http, hub_mqtt_plain, hub_mqtt_tls, hub_cs
# (the iothubowner connection string) and hub_ca. Exits the script if it does not come up.
# With IOTHUB_STORE set in the environment, the hub keeps its state there.
start_hub() {
  local data=$work/hub
  launch_iothubd "$data" "$work/hub.log"
  hub_pid=$launched_pid
  hub_http=$launched_http
  hub_mqtt_plain=$launched_mqtt_plain
  hub_mqtt_tls=$launched_mqtt_tls
  hub_cs=$("$iothubd" connection-string --data-dir "$data")
  hub_ca=$data/tls/ca.pem
  log "iothubd pid $hub_pid http $hub_http mqtt $hub_mqtt_plain mqtts $hub_mqtt_tls"
}

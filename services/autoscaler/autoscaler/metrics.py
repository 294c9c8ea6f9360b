"""The autoscaler's Prometheus metrics, served on /metrics: its inputs and decisions, for
dashboards, and for KEDA where the metrics-only backend leaves the acting to it."""

from prometheus_client import Counter, Gauge

WAITING = Gauge("autoscaler_waiting_runs", "Runs due to start: Scheduled/Late and due, Pending")
RUNNING = Gauge("autoscaler_running_runs", "Runs Running or Cancelling on the pool")
CURRENT = Gauge("autoscaler_current_agents", "Agents started and not being stopped")
DESIRED = Gauge("autoscaler_desired_agents", "Agents the backlog asks for, within the bounds")
ONLINE = Gauge("autoscaler_online_agents", "Agents the Prefect server sees online on the pool")
STANDBY = Gauge("autoscaler_standby_agents", "Standby agents: started, not polling yet")
STANDBY_READY = Gauge("autoscaler_standby_ready_agents", "Standby agents warm and waiting")
STARTED = Counter("autoscaler_agents_started", "Agents started cold (standby ones apart)")
PROMOTED = Counter("autoscaler_agents_promoted", "Standby agents promoted to agents")
STOPPED = Counter("autoscaler_agents_stopped", "Agents stopped (idle ones only)")
ERRORS = Counter("autoscaler_errors", "Polls that failed (Prefect or Docker unreachable)")
REPAIRS = Counter(
    "autoscaler_runs_repaired",
    "Runs recovered: crashed or cancelled (agent gone), or rescheduled after a crash",
    ["to"],
)

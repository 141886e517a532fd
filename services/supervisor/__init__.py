"""Local mode: every service as a supervised process on 127.0.0.1 (`make up` / `make down`).

`python -m services.supervisor up` writes the service list to .run/services.json and starts a
detached daemon (its own session) that owns the children: it spawns them in order (a service
starts once the services in its `after` list are ready), probes each with a real inference,
restarts crashed children with backoff (bounded per minute) and keeps .run/state.json current.
`up` itself only waits on that state file, prints a table and returns, like `docker compose up -d
--wait`. `down` signals the daemon, which stops every process group; `down` then checks with psutil
that no process of the recorded trees survives and kills any that did.

.run/state.json (read by `status` and by the load-test report):
  {"supervisor": {"pid", "started_at", "stopped_at"},
   "services": {name: {"status": waiting|starting|ready|restarting|failed|stopped,
                       "pid", "url", "ports": {ENV_NAME: port}, "spawned_at", "ready_at",
                       "startup_s" (spawn -> first successful real inference, last spawn),
                       "rss_bytes" (sum over the process tree), "rss_peak_bytes", "restarts",
                       "last_exit", "probe_error", "tree": [[pid, create_time], ...], "log"}}}

Nothing heavy is imported here: containers run `python -m services.supervisor.probe` as their
healthcheck with only the stdlib, numpy and pydantic.
"""

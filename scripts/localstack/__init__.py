"""The local stack as plain processes: PostgreSQL primary + 2 replicas, Kafka (KRaft, 1 or 3
nodes), Kafka Connect with Debezium, localstripe, the API (gunicorn) and 1..N Faust workers.

    scripts/stack up [NAME ...]      start everything (or the named parts, with what they need)
    scripts/stack down               stop exactly what the stack started (by pid)
    scripts/stack status             each part, then the /ops snapshot
    scripts/stack logs [NAME]        the tail of one log, or of all
    scripts/stack start|stop|kill NAME   one part (kill = SIGKILL, for fault tests)
    scripts/stack secrets            write the generated .env (secrets + ports) and start nothing

Layout, from the environment (or what this stack was first made with):
    STACK_PORT_OFFSET=N   shift every port by N (two stacks on one machine: 0, 100, 200, ...)
    WORKERS=N             Faust workers worker, worker2, ... on web ports 6066, 6067, ...
    KAFKA_BROKERS=1|3     one combined KRaft node, or three (kafka, kafka2, kafka3)

State lives in $STACK_DIR (default .stack/): data, pid files, logs/<name>.log. The generated
settings and secrets live in .env (gitignored, mode 600), which every process reads.

Modules: ``config`` (layout, ports, names), ``envfile`` (.env and its secrets), ``processes``
(pid files, spawn, stop), ``postgres``, ``kafka``, ``connect``, ``services`` (localstripe, API,
workers), ``cli`` (the commands).
"""

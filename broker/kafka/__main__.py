"""``python -m broker.kafka up|down|status|fetch`` (see :mod:`broker.kafka.harness`)."""

from broker.kafka.harness import main

main()

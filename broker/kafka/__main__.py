"""``python -m broker.kafka up|down|status|fetch``: ``safeshare kafka`` (:mod:`.harness`)."""

from broker.kafka.harness import main

main()

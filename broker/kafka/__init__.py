"""Thin, typed wrappers around kafka-python: the only Kafka clients Safeshare uses.

No other package imports kafka-python. Keeping it here gives one place to fix
defaults, one place where kafka-python's exceptions become ours
(:mod:`broker.kafka.exceptions`), and typed values (:mod:`broker.kafka.structs`)
instead of kafka-python's untyped namedtuples. One module per client:
:mod:`~broker.kafka.producer`, :mod:`~broker.kafka.consumer`,
:mod:`~broker.kafka.admin`; how they are built and which topics a deployment
needs in :mod:`~broker.kafka.configuration`.

Exactly-once consume-transform-produce (the router's loop)::

    producer = make_producer(bootstrap, transactional_id=topics.router_transactional_id("r1"))
    producer.init_transactions()            # once; fences an older instance with this id
    consumer = make_consumer(bootstrap, group_id=topics.router_group, pattern=topics.ingest_pattern)
    while running:
        records = consumer.poll_records(timeout_ms=500)
        if not records:
            continue
        try:
            with producer.transaction():
                for r in records:
                    producer.send(feed_topic, value, key=r.key)
                producer.send_offsets_to_transaction(
                    offsets_after(records), consumer.group_metadata())
        except TransactionAbortedError:
            consumer.rewind_to_committed()  # replay the batch
        # ProducerFencedError: another instance took over; stop.
"""

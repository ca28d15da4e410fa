"""Signed outbound webhooks (Standard Webhooks): endpoints, the durable outbox, delivery.

model.py         event types, endpoints and the retry schedule (pure)
signing.py       secrets and `webhook-*` headers (pure, the `standardwebhooks` package)
destinations.py  which URLs and addresses may be called (SSRF guard), and a resolver that
                 connects only to the address it checked
outbox.py        `record_event`: the event and its deliveries, inside the caller's transaction
store.py         endpoints and deliveries in the database (claims with leases)
service.py       endpoint management (secrets sealed by the vault)
worker.py        the delivery worker
errors.py        the package's error tree
"""

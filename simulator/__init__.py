"""A small Agora Cloud Recording simulator for tests and demos.

It answers the REST API (acquire/start/query/update/updateLayout/stop), plays each recording's
callbacks in Agora's documented order with NCS delivery rules, writes recording files to S3,
and misbehaves on request (faults). Run it with `python -m simulator --help`.
"""

"""RQ jobs that follow up on stored callbacks.

Start a worker (with RQ's scheduler) from the same environment as the web app:
`python -m workers`. Jobs are thin wrappers over plain functions that take the store.
"""

"""Agora Cloud Recording callback receiver: verify, validate, store, hand off.

Deliberately empty: importing webhook.store or webhook.schemas must not pull in Flask.
"""

"""Transports below the adapters: the plumbing a biller protocol rides on.

An adapter (telecom SOAP, the generic JSON biller, ...) encodes and decodes
its biller's messages; a transport moves the bytes and says, for every way
an exchange can end, what it means for the money (nothing sent, refused,
outcome unknown).  Each transport is reusable by the next adapter.
"""

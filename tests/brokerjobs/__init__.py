"""Task modules that the real Celery and RQ workers of ``tests/brokers.py`` import.

Each execution appends one JSON line to the file named by ``CRONPLUS_TEST_RECORD``.
"""

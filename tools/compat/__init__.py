"""``make compat``: django-pgpubsub 1.3.1's own test suite, run against pgpubsub."""

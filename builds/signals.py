from django.dispatch import Signal

# Sent inside build_finish's transaction, after the state is saved (kwargs: build, and key: the
# ApiKey that finished it, or None for the system).
# Higher apps (webhooks) handle it to write their outbox rows atomically with the finish;
# builds/ never imports them.
build_finished = Signal()

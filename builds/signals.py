from django.dispatch import Signal

# Sent inside build_finish's transaction, after the state is saved (kwargs: build).
# Higher apps (webhooks) handle it to write their outbox rows atomically with the finish;
# builds/ never imports them.
build_finished = Signal()

"""Finishing a build writes the outbox rows in its own transaction; queuing follows the commit,
and a broker that is down loses nothing."""

import pytest
from django.db import transaction

from builds.services import build_finish
from devtools.factories import make_build
from tokens.scopes import Scope
from tokens.services import key_derive
from webhooks import services
from webhooks.models import Delivery, Subscription

pytestmark = pytest.mark.django_db


def subscription(project, events=("build.succeeded", "build.failed", "build.canceled")):
    return services.subscription_create(
        project=project, url="https://ci.example/hook", events=list(events)
    ).subscription


def finish(api, created, state="succeeded", token=None):
    return api.as_key(token or created.token).post(
        f"/api/v1/builds/{created.build.pk}/finish", {"state": state}, "json"
    )


@pytest.mark.parametrize("state", ["succeeded", "failed", "canceled"])
def test_finishing_writes_one_delivery_per_matching_active_subscription(api, project, state):
    wanted = subscription(project)
    subscription(project, events=["ping"])  # wants no build events
    disabled = subscription(project)
    Subscription.objects.filter(pk=disabled.pk).update(active=False)
    created = make_build(project, trusted=True)
    assert finish(api, created, state).status_code == 200
    (delivery,) = Delivery.objects.exclude(event="ping")
    assert delivery.subscription == wanted
    assert delivery.event == f"build.{state}" and delivery.build == created.build


def test_untrusted_builds_notify_nobody_unless_the_project_opts_in(api, project):
    subscription(project)
    finish(api, make_build(project, trusted=False))
    assert not Delivery.objects.exists()
    type(project).objects.filter(pk=project.pk).update(untrusted_webhooks=True)
    finish(api, make_build(project, trusted=False))
    assert Delivery.objects.count() == 1


def test_a_finish_by_a_derived_key_notifies_nobody(api, project):
    subscription(project)
    created = make_build(project, trusted=True)
    _, derived = key_derive(parent=created.key, scopes=[Scope.BUILD_FINISH])
    assert finish(api, created, token=derived).status_code == 200
    assert not Delivery.objects.exists()


def test_a_status_report_notifies_nobody(api, project):
    subscription(project)
    created = make_build(project, trusted=True)
    response = api.as_key(created.token).post(
        f"/api/v1/builds/{created.build.pk}/statuses/",
        {"context": "ci", "state": "success"},
        "json",
    )
    assert response.status_code == 201
    assert not Delivery.objects.exists()


def test_a_finish_that_rolls_back_leaves_no_delivery(project):
    subscription(project)
    created = make_build(project, trusted=True)
    with pytest.raises(RuntimeError), transaction.atomic():
        build_finish(build=created.build, state="succeeded")
        assert Delivery.objects.count() == 1
        raise RuntimeError("the commit fails")
    assert not Delivery.objects.exists()


def test_send_tasks_are_queued_after_the_commit_and_a_dead_broker_loses_nothing(
    api, project, settings, django_capture_on_commit_callbacks, monkeypatch
):
    from webhooks import tasks

    subscription(project)
    queued = []
    monkeypatch.setattr(
        tasks.delivery_send_task, "apply_async", lambda args, **kw: queued.append(args)
    )
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        finish(api, make_build(project, trusted=True))
    assert queued == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert queued == [(Delivery.objects.get().pk,)]
    assert Delivery.objects.get().enqueued_at is not None

    def broker_down(args, **kwargs):
        raise ConnectionRefusedError("Error 111 connecting to 127.0.0.1:6399")

    monkeypatch.setattr(tasks.delivery_send_task, "apply_async", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        assert finish(api, make_build(project, trusted=True)).status_code == 200
    lost = Delivery.objects.get(enqueued_at__isnull=True)
    monkeypatch.setattr(
        tasks.delivery_send_task, "apply_async", lambda args, **kw: queued.append(args)
    )
    assert services.deliveries_sweep() == 1  # the broker is back: the sweeper queues it
    assert queued[-1] == (lost.pk,)
    assert services.deliveries_sweep() == 0  # queued recently: not again


def test_many_subscribers_are_handed_to_one_dispatch_task(
    api, project, django_capture_on_commit_callbacks, monkeypatch
):
    from webhooks import tasks

    for _ in range(services.DISPATCH_INLINE_MAX + 1):
        subscription(project)
    dispatched, sent = [], []
    monkeypatch.setattr(
        tasks.deliveries_dispatch_task, "apply_async", lambda args, **kw: dispatched.append(args)
    )
    monkeypatch.setattr(
        tasks.delivery_send_task, "apply_async", lambda args, **kw: sent.append(args)
    )
    with django_capture_on_commit_callbacks(execute=True):
        finish(api, make_build(project, trusted=True))
    ids = sorted(Delivery.objects.values_list("pk", flat=True))
    assert sent == [] and [sorted(args[0]) for args in dispatched] == [ids]
    tasks.deliveries_dispatch_task(dispatched[0][0])  # what the worker runs
    assert sorted(args[0] for args in sent) == ids

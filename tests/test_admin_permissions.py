"""The admin for staff who may only look: every page opens, no secret shows
in full, and no action that changes anything is offered or runs."""

import json

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from conversations.models import (
    CallbackDelivery,
    CallbackEndpoint,
    Notification,
    WebhookEvent,
    mask_secret,
)
from tests.factories import UserFactory, WhatsAppNumberFactory

pytestmark = pytest.mark.django_db

ACCESS_TOKEN = "EAAG-access-token-of-the-number-7001"
APP_SECRET = "app-secret-of-the-meta-app-7002"
VERIFY_TOKEN = "verify-token-of-the-app-7003"
CALLBACK_SECRET = "callback-signing-secret-7004"
SECRETS = (ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, CALLBACK_SECRET)


def staff_with(*codenames):
    user = UserFactory(is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def view_only_staff():
    """Staff with the view permission of every model, and no other."""
    user = UserFactory(is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    return user


@pytest.fixture
def viewer_client(client):
    client.force_login(view_only_staff())
    return client


@pytest.fixture
def secrets():
    number = WhatsAppNumberFactory(access_token=ACCESS_TOKEN)
    number.app.app_secret = APP_SECRET
    number.app.verify_token = VERIFY_TOKEN
    number.app.save()
    endpoint = CallbackEndpoint.objects.create(
        name="Shop", url="https://shop.example/hooks", secret=CALLBACK_SECRET
    )
    return number, endpoint


@pytest.fixture
def failed_callback(secrets):
    number, endpoint = secrets
    notification = Notification.objects.create(
        to="+4915112345678",
        number=number,
        purpose="utility",
        template_name="order_update",
        template_language="en",
        state=Notification.State.QUEUED,
    )
    return CallbackDelivery.objects.create(
        endpoint=endpoint,
        notification=notification,
        event="failed",
        payload={"status": "failed"},
        state=CallbackDelivery.State.FAILED,
        attempts=10,
    )


@pytest.fixture
def failed_event(secrets):
    number, _ = secrets
    return WebhookEvent.objects.create(
        body=json.dumps({"object": "whatsapp_business_account", "entry": []}).encode(),
        headers={},
        app=number.app,
        received_at=timezone.now(),
        state=WebhookEvent.State.FAILED,
        attempts=3,
        last_error="boom",
    )


def change_pages(number, endpoint, delivery=None):
    pages = [
        reverse("admin:conversations_whatsappnumber_change", args=[number.pk]),
        reverse("admin:conversations_metaapp_change", args=[number.app_id]),
        reverse("admin:conversations_callbackendpoint_change", args=[endpoint.pk]),
    ]
    if delivery is not None:
        pages.append(
            reverse("admin:conversations_callbackdelivery_change", args=[delivery.pk])
        )
    return pages


def list_pages():
    return [
        reverse("admin:conversations_whatsappnumber_changelist"),
        reverse("admin:conversations_metaapp_changelist"),
        reverse("admin:conversations_callbackendpoint_changelist"),
    ]


def test_a_view_only_admin_opens_the_pages_of_numbers_apps_and_endpoints(
    viewer_client, secrets, failed_callback
):
    for url in change_pages(*secrets, failed_callback) + list_pages():
        response = viewer_client.get(url)
        assert response.status_code == 200, url


def test_a_view_only_admin_sees_every_secret_masked(viewer_client, secrets):
    for url in change_pages(*secrets) + list_pages():
        html = viewer_client.get(url).content.decode()
        for secret in SECRETS:
            assert secret not in html, (url, secret)
    number_page, app_page, endpoint_page = (
        viewer_client.get(url).content.decode() for url in change_pages(*secrets)
    )
    assert "••••••••7001" in number_page
    assert "••••••••7002" in app_page
    assert "••••••••7003" in app_page
    assert "••••••••7004" in endpoint_page


def test_an_admin_who_may_change_sees_the_secrets_masked_too(admin_client, secrets):
    for url in change_pages(*secrets) + list_pages():
        html = admin_client.get(url).content.decode()
        for secret in SECRETS:
            assert secret not in html, (url, secret)
    endpoint_page = admin_client.get(change_pages(*secrets)[2]).content.decode()
    assert "Stored: ••••••••7004" in endpoint_page


def test_an_endpoint_saved_with_the_secret_left_blank_keeps_it(admin_client, secrets):
    _, endpoint = secrets
    response = admin_client.post(
        reverse("admin:conversations_callbackendpoint_change", args=[endpoint.pk]),
        {"name": "Shop 2", "url": "https://shop.example/v2", "secret": ""},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    endpoint.refresh_from_db()
    assert (endpoint.name, endpoint.secret) == ("Shop 2", CALLBACK_SECRET)


def test_a_new_endpoint_needs_a_secret(admin_client):
    response = admin_client.post(
        reverse("admin:conversations_callbackendpoint_add"),
        {"name": "Shop", "url": "https://shop.example/hooks", "secret": ""},
    )
    assert response.status_code == 200
    assert not CallbackEndpoint.objects.exists()


@pytest.mark.parametrize(
    "secret",
    ["", "short", "sixteen-chars-ok", "a-secret-of-15c", "EAAG" + "x" * 200],
)
def test_a_masked_secret_never_shows_more_than_a_quarter_of_it(secret):
    masked = mask_secret(secret)
    shown = masked.replace("•", "")
    assert len(shown) * 4 <= len(secret)
    assert masked == "" if not secret else masked.startswith("••••••••")


def test_a_view_only_admin_is_offered_no_action_anywhere():
    request = RequestFactory().get("/admin/")
    request.user = view_only_staff()
    offered = {
        model._meta.label: sorted(model_admin.get_actions(request))
        for model, model_admin in admin.site._registry.items()
        if model_admin.get_actions(request)
    }
    assert offered == {}


def test_process_again_posted_by_a_view_only_admin_changes_nothing(
    viewer_client, failed_event
):
    response = viewer_client.post(
        reverse("admin:conversations_webhookevent_changelist"),
        {"action": "process_again", "_selected_action": [failed_event.pk]},
    )
    assert response.status_code in (200, 302)
    failed_event.refresh_from_db()
    assert (failed_event.state, failed_event.attempts) == ("failed", 3)


def test_process_again_runs_for_staff_who_may_change_events(client, failed_event):
    client.force_login(staff_with("view_webhookevent", "change_webhookevent"))
    response = client.post(
        reverse("admin:conversations_webhookevent_changelist"),
        {"action": "process_again", "_selected_action": [failed_event.pk]},
        follow=True,
    )
    assert "Processed 1 event(s)." in response.content.decode()
    failed_event.refresh_from_db()
    assert failed_event.state == WebhookEvent.State.PROCESSED


def test_send_again_posted_by_a_view_only_admin_changes_nothing(
    viewer_client, failed_callback
):
    viewer_client.post(
        reverse("admin:conversations_callbackdelivery_changelist"),
        {"action": "send_again", "_selected_action": [failed_callback.pk]},
    )
    failed_callback.refresh_from_db()
    assert failed_callback.state == CallbackDelivery.State.FAILED


def test_send_again_runs_for_staff_who_may_change_callbacks(client, failed_callback):
    client.force_login(staff_with("view_callbackdelivery", "change_callbackdelivery"))
    response = client.post(
        reverse("admin:conversations_callbackdelivery_changelist"),
        {"action": "send_again", "_selected_action": [failed_callback.pk]},
        follow=True,
    )
    assert "Queued again." in response.content.decode()
    failed_callback.refresh_from_db()
    assert failed_callback.state == CallbackDelivery.State.PENDING


def test_the_csv_upload_is_refused_to_staff_who_may_not_send(viewer_client):
    url = reverse("admin:conversations_notificationbatch_upload")
    changelist = reverse("admin:conversations_notificationbatch_changelist")

    page = viewer_client.get(url)
    upload = viewer_client.post(url, {})
    listing = viewer_client.get(changelist).content.decode()

    assert page.status_code == upload.status_code == 302
    assert page.url == upload.url == changelist
    assert url not in listing


def test_api_tokens_are_listed_masked_and_have_no_page_of_their_own(
    admin_client, viewer_client
):
    token = Token.objects.create(user=UserFactory(username="shop"))
    changelist = reverse("admin:authtoken_tokenproxy_changelist")
    page = reverse("admin:authtoken_tokenproxy_change", args=[token.user_id])

    for client in (admin_client, viewer_client):
        listing = client.get(changelist)
        assert listing.status_code == 200
        html = listing.content.decode()
        assert token.key not in html
        assert f"••••••••{token.key[-4:]}" in html
        assert client.get(page).status_code == 403


def test_an_added_api_token_is_shown_once_to_whoever_added_it(admin_client):
    user = UserFactory(username="erp")

    response = admin_client.post(
        reverse("admin:authtoken_tokenproxy_add"), {"user": user.pk}, follow=True
    )

    token = Token.objects.get(user=user)
    assert response.redirect_chain[-1][0] == reverse(
        "admin:authtoken_tokenproxy_changelist"
    )
    assert f"The Token “{token.key}” was added successfully." in (
        response.content.decode()
    )
    again = admin_client.get(reverse("admin:authtoken_tokenproxy_changelist"))
    assert token.key not in again.content.decode()

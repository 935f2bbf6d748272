"""API tokens in the admin: listed and named by their user, never by their
key; a new token's key is shown once, to the admin who made it."""

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from rest_framework.authtoken.models import Token

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def token_admins():
    """Every admin page set over a token model (DRF registers one itself)."""
    return [
        model
        for model in admin.site._registry
        if issubclass(model, Token)  # noqa: SLF001
    ]


def test_no_admin_page_shows_a_token_key(admin_client):
    anna = UserFactory(username="anna", display_name="Anna Agent")
    key = Token.objects.create(user=anna).key
    assert token_admins()
    for model in token_admins():
        base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        for url in (base, f"{base}{anna.pk}/change/", f"{base}{anna.pk}/history/"):
            page = admin_client.get(url)
            assert page.status_code == 200, url
            html = page.content.decode()
            assert key not in html, url
            assert key[:8] not in html, url
        assert "Anna Agent" in admin_client.get(base).content.decode()


def test_a_new_token_is_shown_once_to_the_admin_who_made_it(admin_client):
    anna = UserFactory(username="anna", display_name="Anna Agent")
    (model,) = token_admins()
    base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
    response = admin_client.post(f"{base}add/", {"user": anna.pk})
    key = Token.objects.get(user=anna).key
    assert response.status_code == 200
    assert key in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    # Nowhere else: not in the list, the history or the admin's recent actions.
    assert key not in admin_client.get(base).content.decode()
    assert key not in admin_client.get("/admin/").content.decode()
    assert not LogEntry.objects.filter(object_repr__contains=key).exists()
    assert LogEntry.objects.filter(object_repr="API token of Anna Agent").exists()

"""API tokens in the admin: never shown but masked, except once to the
admin who adds one."""

import pytest
from django.contrib import admin
from rest_framework.authtoken.models import Token

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def token_admins():
    """Every admin page set over a token model (DRF registers one itself)."""
    return [model for model in admin.site._registry if issubclass(model, Token)]


def admin_urls(model, user_pk):
    base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
    return base, [
        f"{base}{user_pk}/change/",
        f"{base}{user_pk}/history/",
        f"{base}{user_pk}/delete/",
    ]


def test_no_admin_page_shows_a_token_key(admin_client):
    anna = UserFactory(username="anna", display_name="Anna Agent")
    key = Token.objects.create(user=anna).key
    assert token_admins()
    for model in token_admins():
        changelist, pages = admin_urls(model, anna.pk)
        listing = admin_client.get(changelist)
        assert listing.status_code == 200
        assert "Anna Agent" in listing.content.decode()
        assert key[:8] not in listing.content.decode()
        for url in pages:
            page = admin_client.get(url)
            assert page.status_code in {200, 403}, url
            assert key[:8] not in page.content.decode(), url


def test_a_new_token_is_shown_once_to_the_admin_who_made_it(admin_client):
    anna = UserFactory(username="anna", display_name="Anna Agent")
    (model,) = token_admins()
    changelist, _ = admin_urls(model, anna.pk)
    response = admin_client.post(f"{changelist}add/", {"user": anna.pk}, follow=True)
    key = Token.objects.get(user=anna).key
    assert key in response.content.decode()
    assert key[:8] not in admin_client.get(changelist).content.decode()


def test_the_admins_log_names_a_new_token_by_its_user(admin_client):
    """The log keeps a text per change and the admin's index shows it under
    "Recent actions": a token's own text is its key."""
    from django.contrib.admin.models import LogEntry

    anna = UserFactory(username="anna", display_name="Anna Agent")
    (model,) = token_admins()
    changelist, _ = admin_urls(model, anna.pk)
    # The one page that shows the key (the list, with the success message).
    admin_client.post(f"{changelist}add/", {"user": anna.pk}, follow=True)
    key = Token.objects.get(user=anna).key
    assert key[:8] not in admin_client.get("/admin/").content.decode()
    assert not LogEntry.objects.filter(object_repr__contains=key[:8]).exists()
    assert LogEntry.objects.get().object_repr == "Token of Anna Agent"

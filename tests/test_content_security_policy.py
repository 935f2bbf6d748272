"""A Content-Security-Policy on every page: scripts and styles from the
helpdesk's own files only, never inline, never eval'd; and pages that need
nothing more."""

from html.parser import HTMLParser

import pytest
from django.utils import timezone

from conversations.models import Conversation, Label
from tests.factories import ConversationFactory, MessageFactory, WhatsAppNumberFactory

pytestmark = pytest.mark.django_db


def directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    policy = {}
    for part in header.split(";"):
        name, *values = part.split()
        policy[name] = values
    return policy


class InlineCode(HTMLParser):
    """What a strict policy blocks, found in a page: inline scripts and
    styles, event handler and style attributes, javascript: URLs, and htmx
    attributes that htmx would evaluate as JavaScript."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and "src" not in attrs:
            if attrs.get("type") not in {"application/json", "text/template"}:
                self.in_script = True
        if tag == "style":
            self.found.append("<style>")
        for name, value in attrs.items():
            value = value or ""
            if name.startswith("on") or name == "style":
                self.found.append(f"{tag} {name}={value!r}")
            elif name.startswith(("hx-on", "data-hx-on")):
                self.found.append(f"{tag} {name}")
            elif name in {"hx-vals", "hx-headers", "hx-vars"} and (
                value.strip().startswith(("js:", "javascript:")) or name == "hx-vars"
            ):
                self.found.append(f"{tag} {name}={value!r}")
            elif name == "hx-trigger" and "[" in value:
                self.found.append(f"{tag} hx-trigger={value!r} (an eval'd filter)")
            elif name in {"href", "src", "action"} and value.strip().lower().startswith(
                "javascript:"
            ):
                self.found.append(f"{tag} {name}={value!r}")

    def handle_data(self, data):
        if self.in_script and data.strip():
            self.found.append(f"inline <script>: {data.strip()[:60]!r}")

    def handle_endtag(self, tag):
        if tag == "script":
            self.in_script = False


def inline_code(response) -> list[str]:
    parser = InlineCode()
    parser.feed(response.content.decode())
    return parser.found


@pytest.fixture
def busy_conversation(number, agent):
    """A conversation with labels, an ad card and a customer message: every
    fragment the conversation page has."""
    conversation = ConversationFactory(
        number=number,
        referral={
            "source_url": "https://fb.me/ad",
            "source_type": "ad",
            "source_id": "120000000000001",
            "headline": "Spring sale",
            "body": "20% off",
            "media_type": "image",
            "image_url": "https://scontent.example.net/ad.jpg",
        },
    )
    message = MessageFactory(conversation=conversation, text="Hello")
    Conversation.objects.filter(pk=conversation.pk).update(
        last_message=message,
        last_message_at=message.timestamp,
        last_inbound_at=timezone.now(),
    )
    conversation.labels.add(
        Label.objects.create(name="VIP", color="#b91c1c"),
        Label.objects.create(name="Refund", color="#1d4ed8"),
    )
    return conversation


def pages(client, agent, admin_user, conversation):
    """Each kind of page, as the people who see it."""
    yield "login", client.get("/accounts/login/")
    client.force_login(agent)
    yield "inbox", client.get("/")
    yield "conversation", client.get(f"/conversations/{conversation.pk}/")
    client.force_login(admin_user)
    yield "reports", client.get("/reports/")
    yield "admin", client.get("/admin/")
    yield (
        "admin form",
        client.get(f"/admin/conversations/conversation/{conversation.pk}/change/"),
    )
    yield "api docs", client.get("/api/docs/")


def test_every_page_carries_a_strict_policy(
    client, agent, admin_user, busy_conversation
):
    for name, response in pages(client, agent, admin_user, busy_conversation):
        assert response.status_code == 200, name
        policy = directives(response)
        assert policy["default-src"] == ["'self'"], name
        assert policy["script-src"] == ["'self'"], name
        assert policy["style-src"] == ["'self'"], name
        assert policy["object-src"] == ["'none'"], name
        assert policy["base-uri"] == ["'none'"], name
        assert policy["frame-ancestors"] == ["'none'"], name
        assert policy["form-action"] == ["'self'"], name
        header = response["Content-Security-Policy"]
        assert "unsafe-inline" not in header and "unsafe-eval" not in header, name


def test_pages_need_nothing_the_policy_blocks(
    client, agent, admin_user, busy_conversation
):
    for name, response in pages(client, agent, admin_user, busy_conversation):
        assert inline_code(response) == [], name


def test_ad_images_from_metas_servers_may_load(agent_client, busy_conversation):
    response = agent_client.get(f"/conversations/{busy_conversation.pk}/")
    assert "https://scontent.example.net/ad.jpg" in response.content.decode()
    assert "https:" in directives(response)["img-src"]


def test_the_api_docs_script_is_a_file_of_the_helpdesk(client):
    page = client.get("/api/docs/")
    scripts = [
        line.split('src="', 1)[1].split('"', 1)[0]
        for line in page.content.decode().splitlines()
        if "<script" in line and 'src="' in line
    ]
    init = [src for src in scripts if "script" in src.split("?", 1)[-1]]
    assert init, scripts
    script = client.get(init[0].replace("&amp;", "&"))
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in script.content.decode()
    assert "validatorUrl" in script.content.decode()


def test_admin_change_forms_need_no_inline_code(admin_client):
    number = WhatsAppNumberFactory()
    response = admin_client.get(
        f"/admin/conversations/whatsappnumber/{number.pk}/change/"
    )
    assert response.status_code == 200
    assert inline_code(response) == []

"""The agent workspace's pages and actions: rendering, authorization, XSS, queries."""

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from conversations import services
from conversations.models import (
    CannedResponse,
    Conversation,
    Label,
    LiveEvent,
    Message,
    MessageTemplate,
    Note,
    Reaction,
)
from conversations.selectors.customer import PREVIOUS_CONVERSATIONS
from conversations.selectors.inbox import INBOX_PAGE_SIZE
from tests.factories import (
    ConversationFactory,
    MessageFactory,
    TeamFactory,
    UserFactory,
    WhatsAppNumberFactory,
)

pytestmark = pytest.mark.django_db

XSS_NAME = "<script>alert('name')</script>"
XSS_TEXT = '<img src=x onerror="alert(1)">'
XSS_FILE = '"><svg onload=alert(2)>.pdf'
XSS_HEADLINE = "<b onmouseover=alert(3)>Ad</b>"


def chat(number, *, text="Hello there", minutes_ago=5, **customer):
    """A conversation with one inbound message, its window open."""
    at = timezone.now() - timedelta(minutes=minutes_ago)
    conversation = ConversationFactory(
        number=number, **{f"customer__{k}": v for k, v in customer.items()}
    )
    message = MessageFactory(conversation=conversation, text=text, timestamp=at)
    Conversation.objects.filter(pk=conversation.pk).update(
        last_message=message, last_message_at=at, last_inbound_at=at, unread_count=1
    )
    conversation.refresh_from_db()
    return conversation


@pytest.fixture
def other_number(db):
    number = WhatsAppNumberFactory()
    number.teams.add(TeamFactory(name="Team B"))
    return number


# --- Rendering every kind of message ------------------------------------------


def test_a_conversation_renders_every_message_type(agent_client, agent, number):
    conversation = chat(number)
    inbound = MessageFactory
    image = inbound(conversation=conversation, type="image", text="A photo")
    image.media_file.save("x.png", ContentFile(b"png"), save=False)
    image.media_state = Message.MediaState.STORED
    image.save()
    inbound(conversation=conversation, type="sticker", media_state="pending")
    inbound(
        conversation=conversation,
        type="document",
        text="",
        media_filename="invoice.pdf",
        media_size=2048,
    )
    inbound(
        conversation=conversation,
        type="location",
        text="Office",
        payload={"latitude": 52.5, "longitude": 13.4, "name": "Office"},
    )
    inbound(
        conversation=conversation,
        type="contacts",
        payload={"contacts": [{"name": {"formatted_name": "Bob"}, "phones": []}]},
    )
    inbound(
        conversation=conversation,
        type="interactive",
        payload={"type": "button_reply", "button_reply": {"id": "y", "title": "Yes"}},
    )
    inbound(conversation=conversation, type="unsupported", text="")
    original = inbound(conversation=conversation, text="Original question")
    inbound(conversation=conversation, text="A quote", reply_to=original)
    inbound(conversation=conversation, text="Fwd", forwarded=True)
    Reaction.objects.create(
        message=original,
        direction="inbound",
        emoji="👍",
        reacted_at=timezone.now(),
    )
    failed = MessageFactory(
        conversation=conversation,
        direction="outbound",
        wamid=None,
        status="failed",
        text="Did not go",
        error={"code": 131026, "title": "Message undeliverable"},
    )
    MessageFactory(
        conversation=conversation,
        direction="outbound",
        wamid="wamid.read1",
        status="read",
        text="Seen",
    )
    MessageFactory(
        conversation=conversation,
        direction="outbound",
        wamid=None,
        status="unknown",
        text="Maybe",
    )
    Note.objects.create(conversation=conversation, author=agent, body="Call back")

    page = agent_client.get(reverse("conversations:detail", args=[conversation.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert reverse("conversations:message-media", args=[image.pk]) in html
    assert "Sticker is downloading" in html
    assert "invoice.pdf" in html and "2.0\xa0KB" in html
    assert "openstreetmap.org" in html and "Office" in html
    assert "Bob" in html
    assert "Chose: <strong>Yes</strong>" in html
    assert "can't be shown" in html
    assert 'class="quote"' in html and "Original question" in html
    assert "Forwarded" in html
    assert "👍" in html
    assert 'aria-label="Failed"' in html and "Message undeliverable" in html
    assert reverse("conversations:resend", args=[failed.pk]) in html
    assert 'aria-label="Read"' in html
    assert "may or may not have arrived" in html
    assert "Private note by" in html and "Call back" in html
    assert 'aria-label="Message"' in html and ">Send<" in html


def test_sent_buttons_and_lists_say_what_was_offered_and_templates_every_value(
    agent_client, number
):
    conversation = chat(number)

    def sent(**fields):
        return MessageFactory(
            conversation=conversation,
            direction="outbound",
            wamid=None,
            status="sent",
            **fields,
        )

    sent(
        type="interactive",
        text="Did it arrive?",
        payload={
            "type": "button",
            "body": {"text": "Did it arrive?"},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": "y", "title": "Yes"}},
                    {"type": "reply", "reply": {"id": "n", "title": "No"}},
                ]
            },
        },
    )
    sent(
        type="interactive",
        text="Pick a slot",
        payload={
            "type": "list",
            "body": {"text": "Pick a slot"},
            "action": {
                "button": "Slots",
                "sections": [
                    {
                        "title": "Today",
                        "rows": [
                            {"id": "1", "title": "9:00"},
                            {"id": "2", "title": "14:00"},
                        ],
                    }
                ],
            },
        },
    )
    MessageFactory(
        conversation=conversation,
        type="interactive",
        payload={"type": "button_reply", "button_reply": {"id": "y", "title": "Yes"}},
    )
    sent(
        type="template",
        text="Anna, your pass",
        payload={
            "name": "boarding_pass",
            "components": [
                {
                    "type": "header",
                    "parameters": [
                        {
                            "type": "document",
                            "document": {
                                "link": "https://example.com/p.pdf",
                                "filename": "boarding-pass.pdf",
                            },
                        }
                    ],
                },
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": "Anna"},
                        {
                            "type": "currency",
                            "currency": {
                                "fallback_value": "€12.50",
                                "code": "EUR",
                                "amount_1000": 12500,
                            },
                        },
                        {
                            "type": "date_time",
                            "date_time": {"fallback_value": "May 4, 2026"},
                        },
                    ],
                },
            ],
        },
    )
    sent(
        type="template",
        payload={
            "name": "spring_sale",
            "components": [
                {
                    "type": "header",
                    "parameters": [
                        {
                            "type": "image",
                            "image": {"link": "https://example.com/img/sale.jpg?v=2"},
                        }
                    ],
                }
            ],
        },
    )

    html = agent_client.get(
        reverse("conversations:detail", args=[conversation.pk])
    ).content.decode()

    assert "Buttons: <strong>Yes</strong> · <strong>No</strong>" in html
    assert "List (Slots): <strong>9:00</strong> · <strong>14:00</strong>" in html
    # Only the customer's answer is a choice.
    assert html.count("Chose: ") == 1
    for value in (
        "Document: boarding-pass.pdf",
        "Anna",
        "€12.50",
        "May 4, 2026",
        "Image: sale.jpg",
    ):
        assert f"<li>{value}</li>" in html


def test_opening_a_conversation_resets_unread_and_publishes_it(
    agent_client, number, django_capture_on_commit_callbacks
):
    conversation = chat(number)
    with django_capture_on_commit_callbacks(execute=False):
        agent_client.get(reverse("conversations:detail", args=[conversation.pk]))
    conversation.refresh_from_db()
    assert conversation.unread_count == 0
    assert LiveEvent.objects.filter(
        conversation=conversation, type="conversation.updated"
    ).exists()


def test_a_closed_window_turns_the_composer_into_a_template_picker(
    agent_client, number
):
    conversation = chat(number, minutes_ago=25 * 60)
    MessageTemplate.objects.create(
        waba_id=number.waba_id,
        name="order_update",
        language="en",
        category="UTILITY",
        status="APPROVED",
        components=[{"type": "BODY", "text": "Hi {{1}}, your order {{2}} shipped"}],
    )
    MessageTemplate.objects.create(
        waba_id=number.waba_id,
        name="rejected_one",
        language="en",
        category="MARKETING",
        status="REJECTED",
    )
    html = agent_client.get(
        reverse("conversations:detail", args=[conversation.pk])
    ).content.decode()
    assert 'aria-label="Message"' not in html
    assert "order_update" in html and "rejected_one" not in html
    assert "Parameter 1" in html and "Parameter 2" in html
    response = agent_client.post(
        reverse("conversations:reply", args=[conversation.pk]),
        {"text": "Too late"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 409
    assert not conversation.messages.filter(direction="outbound").exists()


def test_a_reply_is_queued_and_answers_with_its_bubble(agent_client, agent, number):
    conversation = chat(number)
    response = agent_client.post(
        reverse("conversations:reply", args=[conversation.pk]),
        {"text": "We are on it"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 201
    message = conversation.messages.get(direction="outbound")
    assert message.status == "queued" and message.sender == agent
    assert f'id="msg-{message.pk}"' in response.content.decode()
    assert 'aria-label="Queued"' in response.content.decode()
    # Not yet at Meta, so nothing to react to: the picker waits, hidden, so
    # that the ticks to come change the bubble in place.
    assert '<details class="react" hidden>' in response.content.decode()


def test_workflow_actions_go_through_services(agent_client, agent, number, team):
    conversation = chat(number)
    colleague = UserFactory(username="bob")
    colleague.teams.add(team)
    label = Label.objects.create(name="VIP")
    url = lambda name: reverse(f"conversations:{name}", args=[conversation.pk])  # noqa: E731
    hx = {"HTTP_HX_REQUEST": "true"}
    assert agent_client.post(url("assign"), {"assignee": "me"}, **hx).status_code == 200
    conversation.refresh_from_db()
    assert conversation.assignee == agent
    agent_client.post(url("assign"), {"assignee": colleague.pk}, **hx)
    agent_client.post(url("assign"), {"team": team.pk}, **hx)
    agent_client.post(url("status"), {"status": "pending"}, **hx)
    agent_client.post(url("labels"), {"labels": [label.pk]}, **hx)
    agent_client.post(url("note"), {"body": "Internal only"}, **hx)
    agent_client.post(url("rename"), {"name": "Anna Customer"}, **hx)
    conversation.refresh_from_db()
    assert conversation.assignee == colleague and conversation.team == team
    assert conversation.status == "pending"
    assert list(conversation.labels.all()) == [label]
    assert conversation.notes.get().body == "Internal only"
    assert conversation.customer.name == "Anna Customer"
    types = list(
        LiveEvent.objects.filter(conversation=conversation).values_list(
            "type", flat=True
        )
    )
    assert types.count("conversation.updated") >= 5 and "note.created" in types
    # A stranger cannot be assigned: they cannot see the number.
    stranger = UserFactory(username="eve")
    response = agent_client.post(url("assign"), {"assignee": stranger.pk}, **hx)
    assert response.status_code == 400
    snooze = agent_client.post(url("status"), {"status": "snoozed"}, **hx)
    assert snooze.status_code == 400


def test_snoozed_conversations_wake_up(number, agent):
    conversation = chat(number)
    services.change_status(
        conversation=conversation,
        status="snoozed",
        snoozed_until=timezone.now() + timedelta(minutes=1),
        by=agent,
    )
    assert services.wake_snoozed_conversations() == 0
    later = timezone.now() + timedelta(minutes=2)
    assert services.wake_snoozed_conversations(now=later) == 1
    conversation.refresh_from_db()
    assert conversation.status == "open" and conversation.snoozed_until is None


def test_canned_responses_fill_in_variables(agent_client, agent, number):
    conversation = chat(number, name="Maria")
    canned = CannedResponse.objects.create(
        shortcut="hello", title="Hello", text="Hi {customer_name}, {agent_name} here."
    )
    response = agent_client.get(
        reverse("conversations:canned", args=[conversation.pk, canned.pk])
    )
    assert response.content.decode() == f"Hi Maria, {agent.name} here."


def test_colleagues_show_their_availability_only_while_connected(
    agent_client, team, number
):
    away = UserFactory(username="away-colleague", availability="away")
    gone = UserFactory(username="gone-colleague", availability="online")
    for colleague in (away, gone):
        colleague.teams.add(team)
    services.open_tab(user=away, tab="away-colleague-tab")

    html = agent_client.get(reverse("conversations:inbox")).content.decode()

    assert f'id="agent-{away.pk}" class="agent availability-away"' in html
    # Chose online, but has no workspace open.
    assert f'id="agent-{gone.pk}" class="agent availability-offline"' in html


def test_availability_is_published_to_the_agents_inboxes(agent_client, agent, number):
    response = agent_client.post(
        reverse("conversations:availability"),
        {"availability": "away"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    agent.refresh_from_db()
    assert agent.availability == "away"
    event = LiveEvent.objects.get(type="agent.updated")
    assert event.number_id == number.pk and event.data["agent"] == agent.pk


def test_a_refused_availability_or_consent_answers_with_an_error_shown_in_place(
    agent_client, agent, number
):
    response = agent_client.post(
        reverse("conversations:availability"),
        {"availability": "on holiday"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="availability-error"' in html and 'role="alert"' in html
    assert "Unknown availability" in html

    conversation = chat(number, name="Consent Person")
    response = agent_client.post(
        reverse("conversations:consent", args=[conversation.pk]),
        {"purpose": "newsletter", "status": "opt_in"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 422
    html = response.content.decode()
    # The customer panel again, with the reason next to the consent buttons.
    assert html.strip().startswith('<aside id="customer-panel"')
    assert "Choose a purpose and opt-in or opt-out." in html
    assert not conversation.customer.consents.exists()


def test_inbox_views_filters_and_search(agent_client, agent, number, team):
    mine = chat(number, name="Mine Person")
    Conversation.objects.filter(pk=mine.pk).update(assignee=agent, team=team)
    unassigned = chat(number, name="Nobody Person", text="parcel missing")
    resolved = chat(number, name="Done Person")
    Conversation.objects.filter(pk=resolved.pk).update(status="resolved")

    def names(query):
        return agent_client.get("/?" + query).content.decode()

    assert "Mine Person" in names("view=mine") and "Nobody" not in names("view=mine")
    assert "Nobody Person" in names("view=unassigned")
    assert "Mine Person" not in names("view=unassigned")
    assert "Mine Person" in names("view=teams")
    assert "Done Person" not in names("") and "Done Person" in names("status=resolved")
    assert "Nobody Person" in names("q=parcel") and "Mine Person" not in names(
        "q=parcel"
    )
    assert "Nobody Person" in names(f"q={unassigned.customer.wa_id[-5:]}")
    assert "Mine Person" in names("order=window")


# --- Who may see what ---------------------------------------------------------


def test_an_agent_of_team_a_gets_nothing_of_team_b(agent_client, number, other_number):
    foreign = chat(other_number, name="Foreign Customer", text="Team B secret")
    foreign_message = foreign.messages.first()
    foreign_message.media_file.save("secret.png", ContentFile(b"png"), save=False)
    foreign_message.media_state = Message.MediaState.STORED
    foreign_message.save()
    pk = foreign.pk
    html = agent_client.get("/").content.decode()
    assert "Foreign Customer" not in html and "Team B secret" not in html
    assert (
        "Foreign Customer"
        not in agent_client.get("/?view=all&q=Foreign").content.decode()
    )
    gets = [
        reverse("conversations:detail", args=[pk]),
        reverse("conversations:composer", args=[pk]),
        reverse("conversations:message-media", args=[foreign_message.pk]),
        f"/api/v1/conversations/{pk}/",
        f"/api/v1/conversations/{pk}/messages/",
        f"/api/v1/messages/{foreign_message.pk}/",
    ]
    for url in gets:
        assert agent_client.get(url).status_code == 404, url
    posts = {
        "reply": {"text": "hi"},
        "note": {"body": "x"},
        "assign": {"assignee": "me"},
        "status": {"status": "resolved"},
        "labels": {"labels": []},
        "rename": {"name": "x"},
    }
    for name, data in posts.items():
        url = reverse(f"conversations:{name}", args=[pk])
        assert agent_client.post(url, data).status_code == 404, url
    for name in ("react", "resend"):
        url = reverse(f"conversations:{name}", args=[foreign_message.pk])
        assert agent_client.post(url, {"emoji": "👍"}).status_code == 404
    foreign.refresh_from_db()
    assert foreign.assignee is None and foreign.status == "open"
    assert not foreign.notes.exists()


def test_admins_see_every_number(admin_client, number, other_number):
    chat(other_number, name="Foreign Customer")
    assert "Foreign Customer" in admin_client.get("/").content.decode()


def test_previous_conversations_cover_every_number_the_agent_may_see(
    agent_client, admin_user, team, number, other_number
):
    current = chat(number)
    customer = current.customer
    sales = WhatsAppNumberFactory(name="Sales line")
    sales.teams.add(team)
    on_sales = ConversationFactory(customer=customer, number=sales)
    on_this = ConversationFactory(customer=customer, number=number, status="resolved")
    foreign = ConversationFactory(customer=customer, number=other_number)
    ConversationFactory(number=sales)  # another customer's

    def previous(client):
        html = client.get(reverse("conversations:detail", args=[current.pk]))
        html = html.content.decode()
        return html[html.index("Previous conversations") :]

    def link(conversation):
        return f'href="{reverse("conversations:detail", args=[conversation.pk])}"'

    panel = previous(agent_client)
    # Newest first, each with its number; none of a number of another team.
    assert panel.index(link(on_this)) < panel.index(link(on_sales))
    assert "Sales line" in panel and number.name in panel
    assert link(foreign) not in panel and other_number.name not in panel
    assert panel.count("<li><a ") == 2
    agent_client.force_login(admin_user)
    assert link(foreign) in previous(agent_client)


def test_previous_conversations_are_bounded_and_cost_fixed_queries(
    agent_client, team, number, django_assert_max_num_queries
):
    current = chat(number)
    Conversation.objects.filter(pk=current.pk).update(unread_count=0)
    url = reverse("conversations:detail", args=[current.pk])
    sales = WhatsAppNumberFactory()
    sales.teams.add(team)
    ConversationFactory(customer=current.customer, number=sales)
    with django_assert_max_num_queries(40) as few:
        agent_client.get(url)
    for _ in range(PREVIOUS_CONVERSATIONS + 5):
        earlier = ConversationFactory(
            customer=current.customer, number=sales, status="resolved"
        )
        message = MessageFactory(conversation=earlier)
        Conversation.objects.filter(pk=earlier.pk).update(last_message=message)
    with django_assert_max_num_queries(len(few.captured_queries)):
        html = agent_client.get(url).content.decode()
    panel = html[html.index("Previous conversations") :]
    assert panel.count("<li><a ") == PREVIOUS_CONVERSATIONS


def test_pages_need_a_login(client, number):
    conversation = chat(number)
    for url in ["/", reverse("conversations:detail", args=[conversation.pk])]:
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response.url
    assert (
        client.post(reverse("conversations:reply", args=[conversation.pk])).status_code
        == 302
    )


# --- Customer content is inert ------------------------------------------------


def test_customer_markup_and_links_render_inert(agent_client, number, admin_client):
    conversation = chat(number, text=XSS_TEXT, profile_name=XSS_NAME)
    MessageFactory(
        conversation=conversation,
        type="document",
        text="",
        media_filename=XSS_FILE,
        media_size=10,
    )
    MessageFactory(
        conversation=conversation,
        type="location",
        text="<i>x</i>",
        payload={"latitude": "javascript:alert(1)", "longitude": 1, "name": "<i>x</i>"},
    )
    Conversation.objects.filter(pk=conversation.pk).update(
        referral={
            "headline": XSS_HEADLINE,
            "body": "<script>alert(4)</script>",
            "source_url": "javascript:alert(5)",
            "image_url": "javascript:alert(6)",
            "source_type": "ad",
        }
    )
    html = agent_client.get(
        reverse("conversations:detail", args=[conversation.pk])
    ).content.decode()
    for raw in (XSS_NAME, XSS_TEXT, XSS_FILE, XSS_HEADLINE, "<script>alert(4)"):
        assert raw not in html
    assert "&lt;script&gt;alert(&#x27;name&#x27;)" in html
    assert "&lt;b onmouseover=alert(3)&gt;Ad&lt;/b&gt;" in html
    assert "javascript:" not in html
    assert "Came from an ad" in html
    # The admin shows the same data escaped, too.
    admin_html = admin_client.get(
        reverse("admin:conversations_conversation_change", args=[conversation.pk])
    ).content.decode()
    assert XSS_HEADLINE not in admin_html and XSS_NAME not in admin_html
    listing = admin_client.get(reverse("admin:conversations_customer_changelist"))
    assert XSS_NAME not in listing.content.decode()


def test_safe_ad_links_get_rel_noopener(agent_client, number):
    conversation = chat(number)
    Conversation.objects.filter(pk=conversation.pk).update(
        referral={
            "headline": "Spring sale",
            "body": "Shoes",
            "source_url": "https://fb.me/ad1",
            "image_url": "https://scontent.example/ad.jpg",
            "source_type": "ad",
        }
    )
    html = agent_client.get(
        reverse("conversations:detail", args=[conversation.pk])
    ).content.decode()
    link = '<a href="https://fb.me/ad1" target="_blank"'
    assert link + ' rel="noopener noreferrer nofollow">' in html
    assert 'src="https://scontent.example/ad.jpg"' in html


# --- Queries do not grow with the data ----------------------------------------


def test_inbox_queries_do_not_grow_with_conversations(
    agent_client, number, django_assert_max_num_queries
):
    label = Label.objects.create(name="VIP")
    for _ in range(3):
        chat(number).labels.add(label)
    with django_assert_max_num_queries(14) as few:
        agent_client.get("/")
    for _ in range(30):
        chat(number).labels.add(label)
    with django_assert_max_num_queries(len(few.captured_queries)):
        agent_client.get("/")


def test_conversation_queries_do_not_grow_with_messages(
    agent_client, agent, number, django_assert_max_num_queries
):
    conversation = chat(number)
    Conversation.objects.filter(pk=conversation.pk).update(unread_count=0)
    url = reverse("conversations:detail", args=[conversation.pk])
    for _ in range(3):
        MessageFactory(conversation=conversation)
    # The page's own reads (thread, customer, composer, inbox, sidebar, the
    # service level and rating, the inboxes' live-stream positions); the
    # point is the second request below: no more for forty times the thread.
    with django_assert_max_num_queries(32) as few:
        agent_client.get(url)
    for index in range(40):
        message = MessageFactory(
            conversation=conversation, reply_to=conversation.messages.first()
        )
        Reaction.objects.create(
            message=message, direction="inbound", emoji="👍", reacted_at=timezone.now()
        )
        Note.objects.create(conversation=conversation, author=agent, body=f"n{index}")
        MessageFactory(
            conversation=conversation, direction="outbound", wamid=None, sender=agent
        )
    with django_assert_max_num_queries(len(few.captured_queries)):
        agent_client.get(url)


# --- The inbox's next pages ---------------------------------------------------


def row_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<li id="row-(\d+)"', html)]


def load_more(client, html: str):
    """What "Load more conversations" asks for: its URL and the cursor of
    the list's last row (hx-include), or None when there is no such button."""
    button = re.search(r'class="load-more" hx-get="([^"]+)"', html)
    if button is None:
        return None
    after = re.findall(r'<input type="hidden" name="after" value="([^"]+)">', html)
    return client.get(f"{unescape(button.group(1))}&after={after[-1]}")


def many_chats(number, count: int, **kwargs) -> list[Conversation]:
    return [chat(number, minutes_ago=10 + index, **kwargs) for index in range(count)]


def test_the_inbox_pages_on_after_its_last_row(agent_client, number):
    chats = many_chats(number, INBOX_PAGE_SIZE + 5)
    # Rows with the same moment across the page's end are told apart by id.
    tied = chats[INBOX_PAGE_SIZE - 2 : INBOX_PAGE_SIZE + 2]
    Conversation.objects.filter(pk__in=[c.pk for c in tied]).update(
        last_message_at=tied[0].last_message_at
    )
    first = agent_client.get("/").content.decode()
    assert len(row_ids(first)) == INBOX_PAGE_SIZE
    assert ">Load more conversations</button>" in first

    second = load_more(agent_client, first)
    assert second.status_code == 200
    html = second.content.decode()
    assert len(row_ids(html)) == 5
    assert set(row_ids(first)).isdisjoint(row_ids(html))
    assert set(row_ids(first) + row_ids(html)) == {c.pk for c in chats}
    # The last page: the control is there (it is replaced), the button not.
    assert 'id="inbox-more"' in html and "Load more" not in html


def test_a_next_page_keeps_the_view_filters_search_and_order(
    agent_client, agent, number
):
    wanted = many_chats(number, INBOX_PAGE_SIZE + 3, text="parcel late")
    mine = chat(number, text="parcel late", minutes_ago=1)
    Conversation.objects.filter(pk=mine.pk).update(assignee=agent)
    chat(number, text="hello", minutes_ago=2)
    query = "view=unassigned&q=parcel&order=window&status=open"
    first = agent_client.get(f"/?{query}").content.decode()
    second = load_more(agent_client, first).content.decode()

    shown = row_ids(first) + row_ids(second)
    assert len(shown) == len(set(shown)) == len(wanted)
    # Window closing soonest first: the oldest customer message on top.
    assert shown == [c.pk for c in reversed(wanted)]
    assert f"{reverse('conversations:inbox-more')}?view=unassigned&amp;" in first


def test_a_row_moved_to_the_top_meanwhile_is_not_on_the_next_page(agent_client, number):
    chats = many_chats(number, INBOX_PAGE_SIZE + 5)
    first = agent_client.get("/").content.decode()
    # A customer of the next page writes: the live update puts the row on top.
    moved = chats[-1]
    Conversation.objects.filter(pk=moved.pk).update(last_message_at=timezone.now())
    html = load_more(agent_client, first).content.decode()
    assert moved.pk not in row_ids(html) and len(row_ids(html)) == 4


def test_a_next_page_reads_by_index_in_constant_queries(
    agent_client, number, django_assert_max_num_queries
):
    label = Label.objects.create(name="VIP")
    for conversation in many_chats(number, INBOX_PAGE_SIZE + 2):
        conversation.labels.add(label)
    first = agent_client.get("/").content.decode()
    with CaptureQueriesContext(connection) as few:
        assert len(row_ids(load_more(agent_client, first).content.decode())) == 2
    assert not any("OFFSET" in query["sql"] for query in few.captured_queries)
    for index in range(60):
        chat(number, minutes_ago=500 + index).labels.add(label)
    with django_assert_max_num_queries(len(few.captured_queries)):
        html = load_more(agent_client, first).content.decode()
    assert len(row_ids(html)) == INBOX_PAGE_SIZE
    assert "Load more conversations" in html


# --- Agents' time zones -------------------------------------------------------


def test_an_agent_snoozes_until_a_time_of_their_own_time_zone(
    agent_client, agent, number
):
    User.objects.filter(pk=agent.pk).update(time_zone="Europe/Berlin")
    conversation = chat(number)
    year = timezone.now().year + 1
    response = agent_client.post(
        reverse("conversations:status", args=[conversation.pk]),
        {"status": "snoozed", "snoozed_until": f"{year}-12-01T09:00"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    conversation.refresh_from_db()
    assert conversation.snoozed_until == datetime(year, 12, 1, 8, 0, tzinfo=UTC)
    assert "until Dec 1, 09:00" in response.content.decode()


def test_pages_show_times_in_the_agents_time_zone(agent_client, agent, number):
    conversation = chat(number)
    at = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    conversation.messages.update(timestamp=at)
    Conversation.objects.filter(pk=conversation.pk).update(last_message_at=at)
    url = reverse("conversations:detail", args=[conversation.pk])
    assert agent_client.get(url).content.decode().count(">Jun 1, 10:00</time>") == 2
    User.objects.filter(pk=agent.pk).update(time_zone="Europe/Berlin")
    html = agent_client.get(url).content.decode()
    # The inbox row and the bubble, in summer time.
    assert html.count(">Jun 1, 12:00</time>") == 2 and ">Jun 1, 10:00<" not in html


def test_the_browsers_time_zone_becomes_the_agents_and_unknown_ones_are_refused(
    agent_client, agent
):
    url = reverse("conversations:time-zone")
    # The page names the agent's zone; workspace.js sends the browser's when
    # it differs (tests/test_workspace_browser.py).
    assert 'id="time-zone"' in agent_client.get("/").content.decode()
    assert 'data-zone="UTC"' in agent_client.get("/").content.decode()
    for refused in ("Mars/Olympus_Mons", "", "../../etc/passwd"):
        assert agent_client.post(url, {"time_zone": refused}).status_code == 400
    agent.refresh_from_db()
    assert agent.time_zone == ""
    assert agent_client.post(url, {"time_zone": "Europe/Berlin"}).status_code == 204
    agent.refresh_from_db()
    assert agent.time_zone == "Europe/Berlin"
    assert 'data-zone="Europe/Berlin"' in agent_client.get("/").content.decode()


def test_admins_set_an_agents_time_zone_among_the_known_ones(admin_client, agent):
    page = admin_client.get(reverse("admin:accounts_user_change", args=[agent.pk]))
    assert 'name="time_zone"' in page.content.decode()
    agent.time_zone = "Mars/Olympus_Mons"
    with pytest.raises(ValidationError, match="Unknown time zone Mars/Olympus_Mons"):
        agent.full_clean()

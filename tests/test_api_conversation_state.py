"""The API's conversation object carries its service level and its latest
satisfaction rating, read-only, at a statement count that does not grow
with the page."""

from datetime import timedelta

import pytest
from django.utils import timezone

from conversations.models import (
    Conversation,
    Message,
    SatisfactionRating,
    ServiceLevel,
    ServicePolicy,
)
from tests.factories import ConversationFactory, MessageFactory

# Reading the user's permissions (view_all_numbers decides what they see):
# two queries, once per request.
PERMISSION_QUERIES = 2


def with_state(number, policy, *, now) -> Conversation:
    """A conversation whose first response was missed, whose next response
    is overdue, whose window closes before it, and whose customer rated an
    older survey and left a newer one unanswered."""
    conversation = ConversationFactory(number=number)
    ServiceLevel.objects.create(
        conversation=conversation,
        policy=policy,
        first_response_due_at=now - timedelta(hours=3),
        first_response_met=False,
        next_response_due_at=now - timedelta(minutes=5),
        next_responses_met=2,
        next_responses_missed=1,
        resolution_due_at=now + timedelta(hours=5),
        due_at=now - timedelta(minutes=5),
        window_closes_at=now + timedelta(hours=1),
        escalated=True,
        attention_at=now - timedelta(minutes=5),
    )
    for sent_ago, score in ((timedelta(days=2), 4), (timedelta(hours=1), None)):
        survey = MessageFactory(
            conversation=conversation, direction=Message.Direction.OUTBOUND
        )
        rating = SatisfactionRating.objects.create(
            conversation=conversation,
            message=survey,
            score=score,
            answered_at=now - sent_ago + timedelta(minutes=2) if score else None,
            comment="Quick and friendly" if score else "",
        )
        SatisfactionRating.objects.filter(pk=rating.pk).update(sent_at=now - sent_ago)
    return conversation


@pytest.fixture
def policy(team):
    return ServicePolicy.objects.create(name="Standard", team=team)


def test_the_conversation_carries_its_service_level_and_latest_survey(
    api, meta_number, policy
):
    now = timezone.now()
    conversation = with_state(meta_number, policy, now=now)

    body = api.get(f"/api/v1/conversations/{conversation.pk}/").json()

    level = body["service_level"]
    assert level["policy"] == {"id": policy.pk, "name": "Standard"}
    assert level["escalated"] is True and level["overdue"] is True
    assert level["first_response"]["met"] is False
    assert level["first_response"]["breached"] is True
    assert level["next_response"] == {
        "due_at": level["next_response"]["due_at"],
        "breached": True,
        "met_count": 2,
        "missed_count": 1,
    }
    assert level["resolution"]["met"] is None
    assert level["resolution"]["breached"] is False
    assert level["due_at"] and level["window_closes_at"] and level["attention_at"]
    # The newest survey, not yet answered.
    satisfaction = body["satisfaction"]
    assert satisfaction["score"] is None and satisfaction["rated_at"] is None
    assert satisfaction["surveyed_at"]


def test_a_rated_survey_gives_score_comment_and_time(api, meta_number, policy):
    now = timezone.now()
    conversation = with_state(meta_number, policy, now=now)
    SatisfactionRating.objects.filter(score__isnull=True).delete()

    satisfaction = api.get(f"/api/v1/conversations/{conversation.pk}/").json()[
        "satisfaction"
    ]

    assert satisfaction["score"] == 4
    assert satisfaction["comment"] == "Quick and friendly"
    assert satisfaction["rated_at"] is not None


def test_no_policy_and_no_survey_are_null(api, meta_number):
    conversation = ConversationFactory(number=meta_number)

    body = api.get(f"/api/v1/conversations/{conversation.pk}/").json()

    assert body["service_level"] is None and body["satisfaction"] is None


def test_service_level_and_rating_are_read_only(api, meta_number, policy):
    conversation = with_state(meta_number, policy, now=timezone.now())

    response = api.patch(
        f"/api/v1/conversations/{conversation.pk}/",
        {"service_level": None, "satisfaction": {"score": 1}},
        content_type="application/json",
    )

    assert response.status_code == 200
    assert response.json()["service_level"]["escalated"] is True
    assert SatisfactionRating.objects.filter(score=4).count() == 1


@pytest.mark.parametrize("count", [2, 20])
def test_the_list_with_service_levels_and_ratings_stays_constant(
    api, meta_number, policy, count, django_assert_max_num_queries
):
    now = timezone.now()
    for _ in range(count):
        with_state(meta_number, policy, now=now)

    # The page, its count, labels, notifications and ratings (one read each);
    # the service level and its policy are joined to the page's read.
    with django_assert_max_num_queries(5 + PERMISSION_QUERIES):
        response = api.get("/api/v1/conversations/")

    results = response.json()["results"]
    assert len(results) == count
    assert all(r["service_level"]["policy"]["name"] == "Standard" for r in results)
    assert all(r["satisfaction"]["surveyed_at"] for r in results)


def test_the_schema_documents_both(api):
    schema = api.get("/api/schema/?format=json").json()

    conversation = schema["components"]["schemas"]["Conversation"]["properties"]
    assert conversation["service_level"]["readOnly"] is True
    assert conversation["satisfaction"]["readOnly"] is True
    components = schema["components"]["schemas"]
    assert "escalated" in components["ServiceLevelState"]["properties"]
    assert "rated_at" in components["RatingState"]["properties"]

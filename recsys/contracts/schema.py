"""Column names and value sets of the data contracts (docs/ARCHITECTURE.md, "Data"), named once for the whole code base."""

from __future__ import annotations

# items
ITEM_ID = "item_id"
TITLE = "title"
DESCRIPTION = "description"
CATEGORY = "category"
DOMAIN = "domain"
PRICE = "price"
CREATED_AT = "created_at"

# events
USER_ID = "user_id"
EVENT = "event"
TIMESTAMP = "timestamp"
SESSION_ID = "session_id"
POSITION = "position"

IMPRESSION, CLICK, PURCHASE = "impression", "click", "purchase"
EVENT_TYPES = (IMPRESSION, CLICK, PURCHASE)

ITEM_REQUIRED = (ITEM_ID, TITLE)
ITEM_OPTIONAL = (DESCRIPTION, CATEGORY, DOMAIN, PRICE, CREATED_AT)
EVENT_REQUIRED = (USER_ID, ITEM_ID, EVENT, TIMESTAMP)
EVENT_OPTIONAL = (SESSION_ID, POSITION)

# recommendations
RANK = "rank"
SCORE = "score"
P_CLICK = "p_click"
P_PURCHASE = "p_purchase"
RECOMMENDATION_COLUMNS = (USER_ID, RANK, ITEM_ID, SCORE, P_CLICK, P_PURCHASE)

# graded relevance of what a user did in a window: purchase 2 > click 1 > nothing 0 (ranker labels, metrics)
RELEVANCE = "relevance"

# canonical, internal
TIME_UNIT = "us"  # timestamps are canonicalised to Datetime("us"), naive UTC
UNKNOWN = "unknown"  # fill value for a missing category / domain

"""A synthetic but realistic shop, deterministic for a seed: catalog, daily event logs and the ground truth.

The world: item factor vectors are built from the words of the item's text (its category gives a base
direction, every word picked for its title/description adds its own), so text truly predicts interest.
Users hold a sparse mixture of interests that drifts from `u_start` to `u_end` over the period. Each day an
imperfect production recommender (popularity + recency + noisy relevance + random) shows every active user a
slate; clicks and purchases follow the generative formula that `true_probabilities` evaluates exactly:

    s(t)          = clip((t - start) / (end - start), 0, 1)
    u(t)          = (1 - s) * u_start + s * u_end
    P(click | p)  = p ** -eta * sigmoid(a * u(t)·v + quality + c)
    P(buy | click)= sigmoid(b * u(t)·v - price_gamma * (ln price - ln_price_ref) + c2)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recsys.contracts import schema as S
from recsys.contracts.errors import ConfigError
from recsys.contracts.files import atomic_dir, atomic_path, read_json, write_json
from recsys.contracts.timeline import parse_moment

_DAY_US = 86_400 * 1_000_000
_SECOND_US = 1_000_000
_DIM = 16
_FORMAT_VERSION = 1

# Constants of the generative formula (written to truth/params.json; true_probabilities reads them from there).
_PARAMS: dict[str, float] = {
    "a": 4.0,  # weight of interest u(t)·v in the click logit
    "c": -2.6,  # click logit offset
    "eta": 0.7,  # position bias: position ** -eta (1 at position 1)
    "b": 2.5,  # weight of interest in the purchase-after-click logit
    "c2": -2.2,  # purchase-after-click logit offset
    "price_gamma": 0.35,  # price effect per unit of ln(price)
    "ln_price_ref": math.log(25.0),  # ln of the price at which the price effect is zero
}
# How item factors are built from text (weights of the directions that are summed, then normalised).
_FACTOR_WEIGHTS = {"category": 1.0, "noun": 0.55, "adjective": 0.45, "attribute": 0.35, "brand": 0.25, "use": 0.25, "noise": 0.10}
# The production recommender that chooses what is shown: share of slate candidates by source.
_SOURCES = {"popularity": 0.35, "relevance": 0.30, "recency": 0.15, "random": 0.20}
_SLATE_MIN, _SLATE_MAX, _CANDIDATES = 8, 12, 24
_RECENT_DAYS = 3
_POPULARITY_DECAY = 0.85  # daily decay of the click counts behind the popularity source
# Sessions start between 00:00 and 23:00 (local = UTC) following a daily profile; a whole session ends the same day.
_HOUR_PROFILE = np.array([2, 1, 1, 1, 1, 2, 4, 6, 7, 7, 7, 8, 9, 8, 7, 7, 8, 9, 11, 13, 14, 13, 10], dtype=np.float64)

# Word banks: domain, category, median price, then '|'-separated nouns, adjectives, attributes, brands, uses.
# Book "brands" are authors; every other domain has brands.
_BANK: tuple[tuple[str, str, float, str, str, str, str, str], ...] = (
    ("books", "mystery & thriller", 15.0,
     "detective novel|crime thriller|psychological thriller|murder mystery|spy novel|legal thriller",
     "gripping|twisty|dark|suspenseful|fast-paced|chilling",
     "paperback|hardcover|large print|first in a series|standalone|award-winning|audiobook edition",
     "Elena Marsh|J. R. Caldwell|Tom Hadley|Nora Blackwood|Victor Lang",
     "for late-night readers|for fans of classic whodunits|for a weekend page-turner"),
    ("books", "science fiction & fantasy", 17.0,
     "space opera|high fantasy novel|dystopian novel|time travel novel|dragon saga|cyberpunk thriller",
     "epic|imaginative|sweeping|mind-bending|visionary|magical",
     "paperback|hardcover|first in a trilogy|illustrated map|collector's edition|standalone",
     "Ada Quell|Marcus Verne|Lyra Stone|K. T. Okafor|Ilse Brand",
     "for readers who love big worlds|for fans of hard science fiction|for long journeys"),
    ("books", "cookbooks", 28.0,
     "cookbook|baking book|vegetarian cookbook|one-pot recipe book|bread baking guide|meal prep guide",
     "easy|healthy|family-friendly|seasonal|plant-based|quick",
     "hardcover|spiral-bound|100 recipes|full-color photos|weeknight meals|gluten-free options",
     "Rosa Delgado|Sam Whitaker|Mina Cho|Paul Ferrante",
     "for busy weeknights|for beginner cooks|for weekend bakers"),
    ("books", "children's books", 11.0,
     "picture book|bedtime story|early reader|activity book|board book|chapter book",
     "colorful|funny|gentle|rhyming|interactive|heartwarming",
     "ages 3-5|ages 6-8|sturdy board pages|lift-the-flap|illustrated|read-aloud",
     "Molly Finch|Oscar Pebble|Tilly Moon|Ben Acorn",
     "for bedtime reading|for curious toddlers|for new readers"),
    ("books", "history & biography", 22.0,
     "biography|memoir|military history|world history|political history|travel memoir",
     "acclaimed|definitive|vivid|revealing|meticulously researched|inspiring",
     "hardcover|paperback|illustrated|with archival photos|bestseller|annotated edition",
     "Margaret Hale|David Okonjo|Henry Ashford|Clara Weiss",
     "for history buffs|for book clubs|for curious minds"),
    ("electronics", "headphones & speakers", 80.0,
     "wireless earbuds|over-ear headphones|bluetooth speaker|soundbar|noise-cancelling headphones|portable speaker",
     "wireless|noise-cancelling|compact|bass-heavy|studio-grade|waterproof",
     "30-hour battery|USB-C charging|built-in mic|foldable|IPX7|multipoint pairing|hi-res audio",
     "Sonara|Auralis|Beatline|Qwave|Echofield",
     "for commuting|for workouts|for home listening"),
    ("electronics", "laptops & computers", 750.0,
     "laptop|ultrabook|gaming laptop|mini PC|2-in-1 laptop|chromebook",
     "lightweight|powerful|slim|fast|high-performance|budget",
     "16GB RAM|512GB SSD|14-inch display|backlit keyboard|long battery life|1TB SSD|touchscreen",
     "Voltrix|Nimbus|Corelink|Altura|Zentek",
     "for work and study|for gaming|for travel"),
    ("electronics", "cameras", 320.0,
     "mirrorless camera|action camera|instant camera|camera lens|tripod|dash cam",
     "4K|compact|rugged|professional|stabilized|weather-sealed",
     "24MP sensor|optical zoom|wide-angle|Wi-Fi transfer|with 64GB card|night vision",
     "Lumora|Optix|Shutterly|Focalpoint",
     "for travel photography|for vlogging|for adventure"),
    ("electronics", "smart home", 55.0,
     "smart plug|video doorbell|smart thermostat|security camera|smart bulb|robot vacuum",
     "smart|voice-controlled|energy-saving|wireless|app-controlled|motion-activated",
     "works with Alexa|2-pack|1080p|Wi-Fi|no hub required|color changing|battery powered",
     "Homely|Nestwise|Brightnode|Sentrix",
     "for a connected home|for home security|for saving energy"),
    ("electronics", "phone accessories", 22.0,
     "phone case|wireless charger|power bank|screen protector|charging cable|car mount",
     "slim|fast-charging|shockproof|magnetic|durable|portable",
     "10000mAh|USB-C|MagSafe compatible|2-pack|6 ft|tempered glass|clear",
     "Gripo|Voltcase|Chargeon|Armorly",
     "for everyday carry|for travel|for protecting your phone"),
    ("home", "kitchen", 45.0,
     "chef's knife|cast iron skillet|nonstick pan set|stand mixer|air fryer|coffee grinder",
     "stainless steel|nonstick|heavy-duty|professional|compact|ergonomic",
     "dishwasher safe|8-inch|10-piece set|oven safe|BPA-free|induction compatible",
     "Ironhearth|Culina|Kettleworks|Saltbox",
     "for everyday cooking|for home chefs|for small kitchens"),
    ("home", "bedding", 60.0,
     "duvet cover|sheet set|memory foam pillow|weighted blanket|mattress topper|quilt",
     "soft|breathable|cooling|organic cotton|hypoallergenic|luxury",
     "queen size|king size|400 thread count|machine washable|deep pocket|twin size",
     "Dreamloom|Softnest|Linenwell|Slumbera",
     "for a better night's sleep|for hot sleepers|for guest rooms"),
    ("home", "furniture", 180.0,
     "bookshelf|office chair|coffee table|TV stand|standing desk|bar stool",
     "mid-century|modern|solid wood|ergonomic|minimalist|rustic",
     "easy assembly|adjustable height|walnut finish|with storage|set of 2|oak veneer",
     "Timberline Home|Nordhaus|Oakridge|Loftly",
     "for the living room|for the home office|for small apartments"),
    ("home", "decor", 35.0,
     "table lamp|wall art|throw pillow|scented candle|area rug|wall mirror",
     "boho|modern|handmade|vintage|cozy|minimalist",
     "set of 2|5x7 ft|lavender scent|linen cover|LED|round",
     "Hearth & Fern|Casa Clara|Driftwood Living|Lumen Loft",
     "for a cozy living room|for housewarming gifts|for a bedroom refresh"),
    ("home", "cleaning", 25.0,
     "cordless vacuum|steam mop|microfiber cloths|laundry detergent|air purifier|dish soap",
     "cordless|eco-friendly|powerful|lightweight|unscented|concentrated",
     "HEPA filter|for pet hair|refill pack|48 loads|24-pack|bagless",
     "Sparkly|Purehaven|Tidyco|Freshgrove",
     "for pet owners|for busy households|for allergy sufferers"),
    ("sports", "hiking & camping", 90.0,
     "hiking boots|trail backpack|trekking poles|camping tent|sleeping bag|rain jacket",
     "waterproof|lightweight|breathable|insulated|rugged|packable",
     "men's|women's|2-person|40L|Gore-Tex|ultralight",
     "Trailblaze|Summitline|Ridgeway|Northpeak",
     "for day hikes|for backpacking trips|for wet weather"),
    ("sports", "running", 70.0,
     "running shoes|running shorts|sports watch|running vest|compression socks|headlamp",
     "cushioned|lightweight|breathable|reflective|responsive|moisture-wicking",
     "men's|women's|GPS|wide fit|trail|heart rate monitor",
     "Stridex|Pacely|Fleetfoot|Velocita",
     "for marathon training|for daily runs|for trail running"),
    ("sports", "fitness", 40.0,
     "yoga mat|adjustable dumbbells|resistance bands|kettlebell|foam roller|pull-up bar",
     "non-slip|heavy-duty|adjustable|compact|eco-friendly|high-density",
     "6mm thick|set of 5|20 lb|with carrying strap|for home gym|doorway mount",
     "Corestrong|Flexa|Ironform|Zenflow",
     "for home workouts|for yoga practice|for strength training"),
    ("sports", "cycling", 50.0,
     "bike helmet|bike lights|cycling jersey|bike lock|bike pump|padded cycling shorts",
     "aerodynamic|rechargeable|breathable|heavy-duty|lightweight|high-visibility",
     "MIPS|USB rechargeable|men's|women's|U-lock|CO2 compatible",
     "Spokeline|Velomax|Gearshift|Cadence Co",
     "for commuting by bike|for road cycling|for mountain biking"),
    ("sports", "team sports", 30.0,
     "soccer ball|basketball|baseball glove|tennis racket|shin guards|volleyball",
     "official size|durable|professional|lightweight|indoor|outdoor",
     "size 5|youth|adult|with pump|composite|leather",
     "Goalpost|Courtside|Matchday|Fieldstar",
     "for league play|for practice|for backyard games"),
    ("beauty", "skincare", 28.0,
     "face moisturizer|vitamin C serum|sunscreen|foaming cleanser|retinol cream|eye cream",
     "hydrating|gentle|fragrance-free|brightening|anti-aging|lightweight",
     "SPF 50|for sensitive skin|with hyaluronic acid|1.7 oz|non-comedogenic|vegan",
     "Dewlane|Lumiskin|Purely Botanic|Claribel",
     "for dry skin|for daily use|for oily skin"),
    ("beauty", "hair care", 20.0,
     "shampoo|conditioner|hair oil|hair dryer|curling iron|hair mask",
     "sulfate-free|nourishing|volumizing|ionic|repairing|lightweight",
     "for curly hair|for color-treated hair|argan oil|16 oz|1875W|travel size",
     "Silkora|Maneworks|Tressa|Velvet Root",
     "for frizzy hair|for damaged hair|for everyday styling"),
    ("beauty", "makeup", 18.0,
     "lipstick|mascara|foundation|eyeshadow palette|concealer|setting spray",
     "long-lasting|matte|waterproof|buildable|shimmering|full-coverage",
     "12 shades|cruelty-free|vegan|nude|smudge-proof|travel size",
     "Rouge Atelier|Glowly|Blushfield|Kohlette",
     "for all-day wear|for a natural look|for special occasions"),
    ("beauty", "fragrance", 65.0,
     "eau de parfum|cologne|body mist|perfume oil|fragrance gift set|solid perfume",
     "floral|woody|fresh|citrus|warm|musky",
     "3.4 oz|for women|for men|unisex|travel spray|with vanilla notes",
     "Maison Sable|Aurelle|Cedar & Smoke|Petalune",
     "for evenings out|for everyday wear|as a gift"),
    ("beauty", "shaving & grooming", 35.0,
     "beard trimmer|electric razor|shaving cream|beard oil|safety razor|aftershave balm",
     "cordless|precision|soothing|waterproof|stainless steel|cooling",
     "with 5 combs|USB charging|sandalwood|for sensitive skin|10 blades|travel case",
     "Barberline|Gruff & Co|Keenedge|Stubble Works",
     "for a clean shave|for beard care|for daily grooming"),
    ("grocery", "coffee & tea", 14.0,
     "whole bean coffee|ground coffee|green tea|espresso pods|herbal tea|cold brew concentrate",
     "organic|dark roast|medium roast|single-origin|decaf|fair trade",
     "12 oz bag|2 lb|100 count|Colombian|Ethiopian|caffeine-free",
     "Roastwell|Kettle & Leaf|Bean Republic|Morning Ritual",
     "for your morning cup|for espresso lovers|for a calm evening"),
    ("grocery", "snacks", 9.0,
     "trail mix|protein bars|potato chips|dark chocolate|granola|popcorn",
     "crunchy|high-protein|gluten-free|sea salt|low-sugar|keto-friendly",
     "12-pack|family size|variety pack|peanut-free|1 lb bag|individually wrapped",
     "Crunchfield|Nibble & Co|Summit Snacks|Goodgrain",
     "for the office|for on-the-go snacking|for movie night"),
    ("grocery", "pantry staples", 10.0,
     "extra virgin olive oil|basmati rice|durum wheat pasta|maple syrup|peanut butter|wildflower honey",
     "organic|cold-pressed|raw|stone-ground|imported|natural",
     "1 liter|5 lb bag|non-GMO|glass jar|Italian|pack of 6",
     "Golden Field|Harvest Table|Olivera|Millstone",
     "for everyday cooking|for healthy meals|for baking"),
    ("grocery", "beverages", 12.0,
     "sparkling water|cold-pressed juice|kombucha|energy drink|coconut water|protein shake",
     "zero sugar|organic|refreshing|electrolyte|natural|caffeinated",
     "12-pack|lime flavor|berry flavor|16 oz cans|variety pack|vegan",
     "Fizzwell|Tidepool|Brightsip|Vitalo",
     "for hydration|for workouts|for a midday boost"),
    ("grocery", "baby food", 16.0,
     "baby formula|fruit puree pouches|teething wafers|baby cereal|toddler snacks|baby food jars",
     "organic|gentle|iron-fortified|no added sugar|non-GMO|easy to digest",
     "stage 1|stage 2|12-pack|apple banana|6+ months|sweet potato",
     "Little Sprout|Tiny Harvest|Bloom Baby|Cradle Foods",
     "for growing babies|for on-the-go feeding|for first foods"),
)  # fmt: skip
# Words of made-up book titles: shared by every book category, so they carry no signal (as in real titles).
_BOOK_TITLE_A = ("Silent", "Hidden", "Last", "Broken", "Golden", "Crimson", "Winter", "Lost", "Northern", "Quiet", "Little", "Endless")
_BOOK_TITLE_B = ("Harbor", "Orchard", "Kingdom", "Letters", "River", "Garden", "Station", "Empire", "Lantern", "Shore", "Table", "Summer")
_DESCRIPTION_TEMPLATES = (
    "{a_adj} {noun} from {brand}, {use}. {attrs}.",
    "{Brand}'s {adj} {noun}, made {use}. Details: {attrs}.",
    "Meet the {adj} {noun} by {brand}: great {use}. {attrs}.",
)
_BOOK_DESCRIPTION_TEMPLATES = (
    "{a_adj} {noun} by {brand}, {use}. {attrs}.",
    "{Brand}'s {adj} {noun}, written {use}. Edition: {attrs}.",
)


def _split(text: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in text.split("|"))


@dataclass(frozen=True)
class _World:
    """Vocabulary, category and word directions: everything the seed fixes before items and users exist."""

    domains: tuple[str, ...]
    categories: tuple[str, ...]
    category_domain: np.ndarray  # (n_cat,) domain index
    category_price: np.ndarray  # (n_cat,) median price
    category_weight: np.ndarray  # (n_cat,) share of the catalog and of user interest
    vocab: tuple[str, ...]
    banks: dict[str, tuple[np.ndarray, np.ndarray]]  # part -> ((n_cat, max_len) vocab ids, (n_cat,) lengths)
    category_dirs: np.ndarray  # (n_cat, D) unit vectors
    word_dirs: np.ndarray  # (n_vocab, D)
    brand_quality: np.ndarray  # (n_vocab,) only meaningful for brand words
    domain_categories: np.ndarray  # (n_domain, max per domain) category ids, -1 padded
    domain_size: np.ndarray  # (n_domain,)


_PARTS = ("nouns", "adjs", "attrs", "brands", "uses")


MODES = ("behaviour", "language")


def _phrase_vectors(phrases: list[str]) -> np.ndarray:
    """(len(phrases), H) the frozen pretrained encoder's L2-normalised mean-pooled vector of each phrase."""
    from recsys.contracts.config import ModelConfig
    from recsys.encoder import resolve_encoder, text_vectors

    return text_vectors(phrases, resolve_encoder(ModelConfig())).numpy().astype(np.float64)


def _language_world(world: _World, rng: np.random.Generator) -> _World:
    """The "language" mode: every direction comes from what its words mean, not from a random draw.

    A word's direction is the encoder's vector of the word, centred (a sentence encoder's vectors share one
    large common direction) and projected to _DIM by one fixed random matrix; a category's is its name's
    (with its domain's, as in the default mode). Words that mean alike ("organic", "natural", "non-GMO")
    then pull interest alike in every domain, and a domain nobody has clicked is recoverable from its
    text. The other draws of the world stay those of the default mode."""
    groups = (list(world.domains), list(world.categories), list(world.vocab))
    vectors = _phrase_vectors([phrase for group in groups for phrase in group])
    projection = rng.normal(size=(vectors.shape[1], _DIM)) / math.sqrt(vectors.shape[1])
    parts, start = [], 0
    for group in groups:
        block = vectors[start : start + len(group)]
        parts.append(_normalise((block - block.mean(axis=0)) @ projection))
        start += len(group)
    domain_dirs, own, word_dirs = parts
    category_dirs = _normalise(0.6 * domain_dirs[world.category_domain] + own)
    return dataclasses.replace(world, category_dirs=category_dirs, word_dirs=word_dirs)


def _build_world(rng: np.random.Generator) -> _World:
    domains = tuple(dict.fromkeys(row[0] for row in _BANK))
    categories = tuple(row[1] for row in _BANK)
    words = {part: [_split(row[3 + k]) for row in _BANK] for k, part in enumerate(_PARTS)}
    vocab = tuple(sorted({w for part in _PARTS for bank in words[part] for w in bank}))
    index = {w: i for i, w in enumerate(vocab)}
    banks = {}
    for part in _PARTS:
        lengths = np.array([len(bank) for bank in words[part]], dtype=np.int64)
        ids = np.full((len(categories), int(lengths.max())), -1, dtype=np.int64)
        for k, bank in enumerate(words[part]):
            ids[k, : len(bank)] = [index[w] for w in bank]
        banks[part] = (ids, lengths)
    category_domain = np.array([domains.index(row[0]) for row in _BANK], dtype=np.int64)
    domain_dirs = rng.normal(size=(len(domains), _DIM)) / math.sqrt(_DIM)
    own = rng.normal(size=(len(categories), _DIM)) / math.sqrt(_DIM)
    category_dirs = _normalise(0.6 * domain_dirs[category_domain] + own)
    word_dirs = rng.normal(size=(len(vocab), _DIM)) / math.sqrt(_DIM)
    brand_quality = rng.normal(0.0, 0.35, size=len(vocab))
    category_weight = rng.dirichlet(np.full(len(categories), 6.0))
    domain_size = np.bincount(category_domain, minlength=len(domains))
    domain_categories = np.full((len(domains), int(domain_size.max())), -1, dtype=np.int64)
    for d in range(len(domains)):
        members = np.flatnonzero(category_domain == d)
        domain_categories[d, : len(members)] = members
    return _World(
        domains=domains,
        categories=categories,
        category_domain=category_domain,
        category_price=np.array([row[2] for row in _BANK], dtype=np.float64),
        category_weight=category_weight,
        vocab=vocab,
        banks=banks,
        category_dirs=category_dirs,
        word_dirs=word_dirs,
        brand_quality=brand_quality,
        domain_categories=domain_categories,
        domain_size=domain_size,
    )


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # stable for any x, identical everywhere it is used


def _pick(world: _World, part: str, cat: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ids, lengths = world.banks[part]
    j = np.floor(rng.random(len(cat)) * lengths[cat]).astype(np.int64)
    return ids[cat, j]


def _pick_distinct(world: _World, part: str, cat: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    ids, lengths = world.banks[part]
    keys = rng.random((len(cat), ids.shape[1]))
    keys[np.arange(ids.shape[1])[None, :] >= lengths[cat][:, None]] = np.inf
    order = np.argsort(keys, axis=1, kind="stable")[:, :k]
    return ids[cat[:, None], order]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


@dataclass
class _Catalog:
    item_id: np.ndarray
    category: np.ndarray
    created_us: np.ndarray
    factors: np.ndarray
    quality: np.ndarray
    price: np.ndarray
    frame: pl.DataFrame  # items.parquet


def _build_catalog(world: _World, rng: np.random.Generator, *, initial: int, new_per_day: int, days: int, start_us: int) -> _Catalog:
    n = initial + new_per_day * days
    cat = rng.choice(len(world.categories), size=n, p=world.category_weight)
    noun = _pick(world, "nouns", cat, rng)
    adj = _pick(world, "adjs", cat, rng)
    brand = _pick(world, "brands", cat, rng)
    use = _pick(world, "uses", cat, rng)
    attrs = _pick_distinct(world, "attrs", cat, 3, rng)
    n_attrs = rng.choice(np.array([1, 2, 3]), size=n, p=[0.3, 0.45, 0.25])
    attr_mask = np.arange(3)[None, :] < n_attrs[:, None]
    w = _FACTOR_WEIGHTS
    raw = (
        w["category"] * world.category_dirs[cat]
        + w["noun"] * world.word_dirs[noun]
        + w["adjective"] * world.word_dirs[adj]
        + w["attribute"] * (world.word_dirs[attrs] * attr_mask[:, :, None]).sum(axis=1)
        + w["brand"] * world.word_dirs[brand]
        + w["use"] * world.word_dirs[use]
        + w["noise"] * rng.normal(size=(n, _DIM)) / math.sqrt(_DIM)
    )
    factors = _normalise(raw)
    quality = world.brand_quality[brand] + rng.normal(0.0, 0.3, size=n)
    price = world.category_price[cat] * np.exp(rng.normal(0.0, 0.4, size=n) + 0.3 * world.brand_quality[brand])
    price = np.maximum(np.round(price), 1.0) - 0.01
    created = np.empty(n, dtype=np.int64)
    created[:initial] = start_us - rng.integers(_SECOND_US * 3600, 365 * _DAY_US, size=initial)
    day_of_new = np.repeat(np.arange(days, dtype=np.int64), new_per_day)
    created[initial:] = start_us + day_of_new * _DAY_US + rng.integers(0, _DAY_US, size=n - initial)
    title_a = rng.integers(0, len(_BOOK_TITLE_A), size=n)
    title_b = rng.integers(0, len(_BOOK_TITLE_B), size=n)
    template = rng.integers(0, 6, size=n)

    vocab, books = world.vocab, world.domains.index("books")
    is_book = world.category_domain[cat] == books
    titles, descriptions = [], []
    for i in range(n):  # per item, not per event: string formatting only
        words = [vocab[a] for a, keep in zip(attrs[i], attr_mask[i]) if keep]
        a, nn, b, u = vocab[adj[i]], vocab[noun[i]], vocab[brand[i]], vocab[use[i]]
        if is_book[i]:
            titles.append(f"The {_BOOK_TITLE_A[title_a[i]]} {_BOOK_TITLE_B[title_b[i]]}: {_article(a)} {a} {nn} by {b}, {words[0]}")
            tpl = _BOOK_DESCRIPTION_TEMPLATES[template[i] % len(_BOOK_DESCRIPTION_TEMPLATES)]
        else:
            titles.append(", ".join([f"{b} {a} {nn}", *words[:2]]))
            tpl = _DESCRIPTION_TEMPLATES[template[i] % len(_DESCRIPTION_TEMPLATES)]
        descriptions.append(
            tpl.format(adj=a, a_adj=_cap(f"{_article(a)} {a}"), noun=nn, brand=b, Brand=b, use=u, attrs=_cap(", ".join(words)))
        )

    order = np.argsort(created, kind="stable")  # ids follow creation, as an auto-increment key would
    item_id = np.arange(1, n + 1, dtype=np.int64)
    cat, created, factors, quality, price = cat[order], created[order], factors[order], quality[order], price[order]
    frame = pl.DataFrame(
        {
            S.ITEM_ID: pl.Series(item_id, dtype=pl.Int64),
            S.TITLE: pl.Series([titles[i] for i in order], dtype=pl.String),
            S.DESCRIPTION: pl.Series([descriptions[i] for i in order], dtype=pl.String),
            S.CATEGORY: pl.Series(np.array(world.categories, dtype=object)[cat].tolist(), dtype=pl.String),
            S.DOMAIN: pl.Series(np.array(world.domains, dtype=object)[world.category_domain[cat]].tolist(), dtype=pl.String),
            S.PRICE: pl.Series(price, dtype=pl.Float64),
            S.CREATED_AT: pl.Series(created, dtype=pl.Int64).cast(pl.Datetime(S.TIME_UNIT)),
        }
    )
    return _Catalog(item_id, cat, created, factors, quality, price, frame)


@dataclass
class _Users:
    user_id: np.ndarray
    u_start: np.ndarray
    u_end: np.ndarray
    activity: np.ndarray  # P(session on a given day)
    top_category: np.ndarray  # category index of the largest interest weight
    recommender_prefs: np.ndarray  # (U, n_cat) the production recommender's noisy idea of the user's categories


def _build_users(world: _World, rng: np.random.Generator, *, n: int) -> _Users:
    n_cat = len(world.categories)
    slots = 3
    used = np.arange(slots)[None, :] < rng.choice(np.array([1, 2, 3]), size=n, p=[0.4, 0.4, 0.2])[:, None]
    primary = rng.choice(n_cat, size=n, p=world.category_weight)
    dom = world.category_domain[primary]
    same_domain = rng.random((n, slots)) < 0.6
    within = world.domain_categories[dom[:, None], np.floor(rng.random((n, slots)) * world.domain_size[dom][:, None]).astype(np.int64)]
    anywhere = rng.choice(n_cat, size=(n, slots), p=world.category_weight)
    chosen = np.where(same_domain, within, anywhere)
    chosen[:, 0] = primary
    weight = rng.gamma(1.5, size=(n, slots)) * used
    weight[:, 0] += 0.5  # the primary interest is the strongest more often than not
    weight /= weight.sum(axis=1, keepdims=True)
    pi = np.zeros((n, n_cat))
    np.add.at(pi, (np.repeat(np.arange(n), slots), chosen.ravel()), weight.ravel())
    prefs = world.word_dirs[_pick(world, "adjs", primary, rng)] + world.word_dirs[_pick(world, "attrs", primary, rng)]
    u_start = _normalise(pi @ world.category_dirs + 0.45 * prefs + 0.15 * rng.normal(size=(n, _DIM)) / math.sqrt(_DIM))
    drift_to = rng.choice(n_cat, size=n, p=world.category_weight)
    pi_end = 0.75 * pi
    pi_end[np.arange(n), drift_to] += 0.25
    u_end = _normalise(pi_end @ world.category_dirs + 0.45 * prefs + 0.15 * rng.normal(size=(n, _DIM)) / math.sqrt(_DIM))
    activity = np.clip(np.exp(rng.normal(math.log(0.11), 0.9, size=n)), 0.01, 0.9)
    recommender_prefs = 0.6 * pi + 0.4 * rng.dirichlet(np.full(n_cat, 0.2), size=n)
    return _Users(np.arange(1, n + 1, dtype=np.int64), u_start, u_end, activity, pi.argmax(axis=1), recommender_prefs)


def _interest_weight(at_us: np.ndarray, start_us: int, end_us: int) -> np.ndarray:
    return np.clip((np.asarray(at_us, dtype=np.float64) - start_us) / float(end_us - start_us), 0.0, 1.0)


def _interest(u_start: np.ndarray, u_end: np.ndarray, s: np.ndarray) -> np.ndarray:
    """u(t) = (1 - s) u_start + s u_end, row by row."""
    s = np.asarray(s, dtype=np.float64)[..., None]
    return (1.0 - s) * u_start + s * u_end


def _probabilities(affinity: np.ndarray, quality: np.ndarray, price: np.ndarray, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """P(click | shown at position 1) and P(purchase | click) from u(t)·v: the generative formula itself."""
    p_click = _sigmoid(params["a"] * affinity + quality + params["c"])
    p_buy = _sigmoid(params["b"] * affinity - params["price_gamma"] * (np.log(price) - params["ln_price_ref"]) + params["c2"])
    return p_click, p_buy


def _weighted(cum: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Indices drawn with probability proportional to the weights whose cumulative sum is `cum`."""
    idx = np.searchsorted(cum, r * cum[-1], side="right")
    return np.minimum(idx, len(cum) - 1)


def _parse_start(start: str | dt.date | dt.datetime) -> dt.datetime:
    try:
        return parse_moment(start, what="start", epoch=False)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _to_us(value: dt.datetime) -> int:
    delta = value - dt.datetime(1970, 1, 1)
    return (delta.days * 86_400 + delta.seconds) * _SECOND_US + delta.microseconds


def _from_us(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=int(us))


def generate_shop(
    out_dir: str | Path,
    *,
    users: int = 1500,
    items: int = 1200,
    days: int = 28,
    seed: int = 0,
    new_items_per_day: int = 15,
    start: str | dt.date | dt.datetime = "2026-01-01",
    mode: str = "behaviour",
) -> dict[str, Any]:
    """Write a synthetic shop (items.parquet, events/YYYY-MM-DD.parquet, truth/) to out_dir; returns a summary.

    `mode`: "behaviour" (word and category directions drawn at random: behaviour dominates, text helps
    through the words an item shares with others) or "language" (directions from the pretrained encoder's
    reading of the words: synonyms and unseen domains are recoverable from text, `_language_world`)."""
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    for name, value, low in (("users", users, 1), ("items", items, 1), ("days", days, 1), ("new_items_per_day", new_items_per_day, 0)):
        if int(value) != value or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    users, items, days, new_items_per_day, seed = int(users), int(items), int(days), int(new_items_per_day), int(seed)
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    start_dt = _parse_start(start)
    start_us = _to_us(start_dt)
    end_us = start_us + days * _DAY_US
    out = Path(out_dir)

    world_ss, catalog_ss, users_ss, events_ss = np.random.SeedSequence(seed).spawn(4)
    world = _build_world(np.random.default_rng(world_ss))
    if mode == "language":
        world = _language_world(world, np.random.default_rng([seed, 1729]))  # its own stream: the default mode's draws are unchanged
    catalog = _build_catalog(
        world, np.random.default_rng(catalog_ss), initial=items, new_per_day=new_items_per_day, days=days, start_us=start_us
    )
    people = _build_users(world, np.random.default_rng(users_ss), n=users)
    params = {"version": _FORMAT_VERSION, **_PARAMS, "dim": _DIM, "mode": mode}

    out.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out / "events") as events_tmp, atomic_dir(out / "truth") as truth_tmp:
        counts, sessions, shown_new, active = _simulate(
            world,
            catalog,
            people,
            params,
            np.random.default_rng(events_ss),
            days=days,
            start_us=start_us,
            end_us=end_us,
            events_dir=events_tmp,
        )
        _write_truth(
            truth_tmp,
            catalog,
            people,
            world,
            params,
            seed=seed,
            start_us=start_us,
            end_us=end_us,
            days=days,
            users=users,
            items=items,
            new_per_day=new_items_per_day,
        )
        with atomic_path(out / "items.parquet") as tmp:
            catalog.frame.write_parquet(tmp)
        last_day = start_us + (days - 1) * _DAY_US
        summary = {
            "seed": seed,
            "mode": mode,
            "start": start_dt.isoformat(),
            "end": _from_us(end_us).isoformat(),
            "days": days,
            "users": users,
            "active_users": active,
            "sessions": sessions,
            "items": int(len(catalog.item_id)),
            "items_at_start": items,
            "new_items": new_items_per_day * days,
            "new_items_last_day": int((catalog.created_us >= last_day).sum()),
            "cold_items_shown": shown_new,
            "domains": len(world.domains),
            "categories": len(world.categories),
            "events": {S.IMPRESSION: counts[0], S.CLICK: counts[1], S.PURCHASE: counts[2]},
            "ctr": counts[1] / max(counts[0], 1),
            "purchases_per_click": counts[2] / max(counts[1], 1),
        }
        write_json(out / "summary.json", summary)
    return summary


def _simulate(
    world: _World,
    catalog: _Catalog,
    people: _Users,
    params: dict[str, Any],
    rng: np.random.Generator,
    *,
    days: int,
    start_us: int,
    end_us: int,
    events_dir: Path,
) -> tuple[list[int], int, int, int]:
    n_items, n_cat = len(catalog.item_id), len(world.categories)
    clicks_so_far = np.zeros(n_items)
    base_popularity = np.exp(catalog.quality)
    position_bias = np.arange(1, _SLATE_MAX + 1, dtype=np.float64) ** -params["eta"]
    hour_cum = np.cumsum(_HOUR_PROFILE)
    source_cum = np.cumsum(list(_SOURCES.values()))
    new_items = catalog.created_us >= start_us
    shown = np.zeros(n_items, dtype=bool)
    ever_active = np.zeros(len(people.user_id), dtype=bool)
    counts, sessions = [0, 0, 0], 0
    names = np.array(S.EVENT_TYPES, dtype=object)

    for day in range(days):
        day_us = start_us + day * _DAY_US
        active = np.flatnonzero(rng.random(len(people.user_id)) < people.activity)
        ever_active[active] = True
        n_s = len(active)
        hour = _weighted(hour_cum, rng.random(n_s))
        session_us = day_us + hour * 3600 * _SECOND_US + rng.integers(0, 3600 * _SECOND_US, size=n_s)
        slate_size = rng.integers(_SLATE_MIN, _SLATE_MAX + 1, size=n_s)

        pool = np.flatnonzero(catalog.created_us < day_us + _DAY_US)  # everything that exists by the end of the day
        popularity = base_popularity[pool] + clicks_so_far[pool]
        pop_cum = np.cumsum(popularity)
        recent = pool[catalog.created_us[pool] >= day_us - _RECENT_DAYS * _DAY_US]
        # relevance: a category from the recommender's (noisy) idea of the user, then an item of it by popularity
        by_cat = np.argsort(catalog.category[pool], kind="stable")
        cat_pool = pool[by_cat]
        cat_cum = np.cumsum(np.sqrt(popularity[by_cat]))
        cat_end = np.cumsum(np.bincount(catalog.category[cat_pool], minlength=n_cat))
        cat_begin = cat_end - np.bincount(catalog.category[cat_pool], minlength=n_cat)

        shape = (n_s, _CANDIDATES)
        source = _weighted(source_cum, rng.random(shape))
        r_pop, r_rand, r_recent, r_cat, r_rel = (rng.random(shape) for _ in range(5))
        by_popularity = pool[_weighted(pop_cum, r_pop)]
        at_random = pool[np.minimum((r_rand * len(pool)).astype(np.int64), len(pool) - 1)]
        if len(recent):
            by_recency = recent[np.minimum((r_recent * len(recent)).astype(np.int64), len(recent) - 1)]
        else:
            by_recency = at_random
        prefs_cum = np.cumsum(people.recommender_prefs[active], axis=1)
        cat = np.minimum((prefs_cum[:, None, :] < (r_cat * prefs_cum[:, -1:])[:, :, None]).sum(axis=2), n_cat - 1)
        lo = np.where(cat_begin[cat] > 0, cat_cum[np.maximum(cat_begin[cat] - 1, 0)], 0.0)
        hi = cat_cum[np.maximum(cat_end[cat] - 1, 0)]
        rel_idx = np.clip(np.searchsorted(cat_cum, lo + r_rel * (hi - lo), side="right"), cat_begin[cat], np.maximum(cat_end[cat] - 1, 0))
        by_relevance = np.where(cat_end[cat] > cat_begin[cat], cat_pool[rel_idx], by_popularity)
        candidates = np.choose(source, [by_popularity, by_relevance, by_recency, at_random])

        # a slate: the first `slate_size` distinct candidates that already exist when the session starts
        valid = catalog.created_us[candidates] < session_us[:, None]
        order = np.argsort(candidates, axis=1, kind="stable")
        sorted_c = np.take_along_axis(candidates, order, axis=1)
        dup_sorted = np.zeros(shape, dtype=bool)
        dup_sorted[:, 1:] = sorted_c[:, 1:] == sorted_c[:, :-1]
        duplicate = np.zeros(shape, dtype=bool)
        np.put_along_axis(duplicate, order, dup_sorted, axis=1)
        keep = valid & ~duplicate
        position = np.cumsum(keep, axis=1)
        keep &= position <= slate_size[:, None]
        rows, cols = np.nonzero(keep)
        imp_item = candidates[rows, cols]
        imp_pos = position[rows, cols].astype(np.int64)
        imp_user = active[rows]
        imp_us = session_us[rows] + (imp_pos - 1) * 100_000  # the slate renders top to bottom, 0.1 s apart

        u = _interest(people.u_start[imp_user], people.u_end[imp_user], _interest_weight(imp_us, start_us, end_us))
        affinity = np.einsum("nd,nd->n", u, catalog.factors[imp_item])
        p1, p_buy = _probabilities(affinity, catalog.quality[imp_item], catalog.price[imp_item], params)
        clicked = rng.random(len(imp_item)) < position_bias[imp_pos - 1] * p1
        bought = clicked & (rng.random(len(imp_item)) < p_buy)
        click_delay = _SECOND_US + np.minimum(rng.exponential(20.0, size=len(imp_item)), 600.0) * _SECOND_US
        buy_delay = 5 * _SECOND_US + np.minimum(rng.exponential(90.0, size=len(imp_item)), 1800.0) * _SECOND_US
        click_us = imp_us + click_delay.astype(np.int64)
        buy_us = click_us + buy_delay.astype(np.int64)

        sel = [np.ones(len(imp_item), dtype=bool), clicked, bought]
        frame = _day_frame(
            user=np.concatenate([imp_user[m] for m in sel]),
            item=np.concatenate([imp_item[m] for m in sel]),
            code=np.concatenate([np.full(int(m.sum()), k, dtype=np.int64) for k, m in enumerate(sel)]),
            ts=np.concatenate([imp_us, click_us[clicked], buy_us[bought]]),
            pos=np.concatenate([imp_pos[m] for m in sel]),
            people=people,
            catalog=catalog,
            names=names,
            day=_from_us(day_us).date(),
        )
        if frame.height:  # a day without sessions leaves no file (an empty file would not load)
            with atomic_path(events_dir / f"{_from_us(day_us).date().isoformat()}.parquet") as tmp:
                frame.write_parquet(tmp)

        for k, m in enumerate(sel):
            counts[k] += int(m.sum())
        sessions += n_s
        shown[imp_item] = True
        clicks_so_far = _POPULARITY_DECAY * clicks_so_far + np.bincount(imp_item[clicked], minlength=n_items)
    return counts, sessions, int((shown & new_items).sum()), int(ever_active.sum())


def _day_frame(*, user, item, code, ts, pos, people: _Users, catalog: _Catalog, names, day: dt.date) -> pl.DataFrame:
    order = np.lexsort((code, pos, user, ts))
    user, item, code, ts, pos = user[order], item[order], code[order], ts[order], pos[order]
    frame = pl.DataFrame(
        [
            pl.Series(S.USER_ID, people.user_id[user], dtype=pl.Int64),
            pl.Series(S.ITEM_ID, catalog.item_id[item], dtype=pl.Int64),
            pl.Series(S.EVENT, names[code].tolist(), dtype=pl.String),
            pl.Series(S.TIMESTAMP, ts, dtype=pl.Int64).cast(pl.Datetime(S.TIME_UNIT)),
            pl.Series(S.POSITION, pos, dtype=pl.Int32),
        ]
    )
    session = pl.concat_str([pl.lit(f"{day:%Y%m%d}-"), pl.col(S.USER_ID).cast(pl.String)]).alias(S.SESSION_ID)
    return frame.with_columns(session).select(S.USER_ID, S.ITEM_ID, S.EVENT, S.TIMESTAMP, S.SESSION_ID, S.POSITION)


def _write_truth(
    truth_dir: Path,
    catalog: _Catalog,
    people: _Users,
    world: _World,
    params: dict[str, Any],
    *,
    seed: int,
    start_us: int,
    end_us: int,
    days: int,
    users: int,
    items: int,
    new_per_day: int,
) -> None:
    user_frame = pl.DataFrame(
        {
            S.USER_ID: pl.Series(people.user_id, dtype=pl.Int64),
            "u_start": pl.Series(people.u_start.tolist(), dtype=pl.List(pl.Float64)),
            "u_end": pl.Series(people.u_end.tolist(), dtype=pl.List(pl.Float64)),
            "top_category": pl.Series(np.array(world.categories, dtype=object)[people.top_category].tolist(), dtype=pl.String),
            "activity": pl.Series(people.activity, dtype=pl.Float64),
        }
    )
    item_frame = pl.DataFrame(
        {
            S.ITEM_ID: pl.Series(catalog.item_id, dtype=pl.Int64),
            "factors": pl.Series(catalog.factors.tolist(), dtype=pl.List(pl.Float64)),
            "quality": pl.Series(catalog.quality, dtype=pl.Float64),
            S.PRICE: pl.Series(catalog.price, dtype=pl.Float64),
        }
    )
    with atomic_path(truth_dir / "users.parquet") as tmp:
        user_frame.write_parquet(tmp)
    with atomic_path(truth_dir / "items.parquet") as tmp:
        item_frame.write_parquet(tmp)
    write_json(
        truth_dir / "params.json",
        {
            **params,
            "formula": {
                "interest": "u(t) = (1 - s) * u_start + s * u_end, s = clip((t - start) / (end - start), 0, 1)",
                "click": "P(click | shown at position p, t) = p ** -eta * sigmoid(a * dot(u(t), factors) + quality + c)",
                "purchase_after_click": "P(purchase | click, t) = sigmoid(b * dot(u(t), factors) - price_gamma * (ln(price) - ln_price_ref) + c2)",
                "purchase": "P(purchase | shown at position p, t) = P(click | shown at p, t) * P(purchase | click, t)",
            },
            "start": _from_us(start_us).isoformat(),
            "end": _from_us(end_us).isoformat(),
            "seed": seed,
            "days": days,
            "users": users,
            "items_at_start": items,
            "new_items_per_day": new_per_day,
            "factor_weights": _FACTOR_WEIGHTS,
            "recommender_sources": _SOURCES,
            "slate_size": [_SLATE_MIN, _SLATE_MAX],
            "popularity_decay": _POPULARITY_DECAY,
        },
    )


def _lookup(ids: np.ndarray, known: np.ndarray, what: str) -> np.ndarray:
    order = np.argsort(known, kind="stable")
    pos = np.clip(np.searchsorted(known, ids, sorter=order), 0, len(known) - 1)
    rows = order[pos]
    missing = known[rows] != ids
    if missing.any():
        raise KeyError(f"{int(missing.sum())} {what} id(s) not in the ground truth, e.g. {ids[missing][:3].tolist()}")
    return rows


@dataclass(frozen=True)
class _Truth:
    params: dict[str, Any]
    user_id: np.ndarray
    u_start: np.ndarray
    u_end: np.ndarray
    item_id: np.ndarray
    factors: np.ndarray
    quality: np.ndarray
    price: np.ndarray
    start_us: int
    end_us: int


@functools.lru_cache(maxsize=4)
def _load_truth(folder: str, stamp: tuple[int, ...]) -> _Truth:
    """Read truth/ once per content version (`stamp` holds the files' mtimes and sizes)."""
    truth = Path(folder)
    params = read_json(truth / "params.json")
    users = pl.read_parquet(truth / "users.parquet")
    items = pl.read_parquet(truth / "items.parquet")
    dim = int(params["dim"])
    return _Truth(
        params=params,
        user_id=users[S.USER_ID].to_numpy(),
        u_start=users["u_start"].explode().to_numpy().reshape(-1, dim),
        u_end=users["u_end"].explode().to_numpy().reshape(-1, dim),
        item_id=items[S.ITEM_ID].to_numpy(),
        factors=items["factors"].explode().to_numpy().reshape(-1, dim),
        quality=items["quality"].to_numpy(),
        price=items[S.PRICE].to_numpy(),
        start_us=_to_us(_parse_start(params["start"])),
        end_us=_to_us(_parse_start(params["end"])),
    )


def _truth(truth_dir: str | Path) -> _Truth:
    truth = Path(truth_dir).resolve()
    files = [truth / "params.json", truth / "users.parquet", truth / "items.parquet"]
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"{file}: missing; truth_dir must be the truth/ folder written by generate_shop")
    stamp = tuple(v for file in files for v in (file.stat().st_mtime_ns, file.stat().st_size))
    return _load_truth(str(truth), stamp)


@dataclass(frozen=True)
class ItemTruth:
    """The item side of the ground truth only (no user's interest): what a perfect item model would know."""

    factors: np.ndarray  # (n, dim) unit vectors v
    quality: np.ndarray  # (n,) the click logit's item term
    price: np.ndarray  # (n,)
    params: dict[str, Any]

    def gains(self, users: np.ndarray, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """E[2^rel − 1] = p_click + 2·p_purchase at position 1 for interest vectors `users` (B, dim) × items `rows`."""
        p_click, p_buy = _probabilities(users @ self.factors[rows].T, self.quality[rows][None, :], self.price[rows][None, :], self.params)
        return p_click * (1.0 + 2.0 * p_buy)


def true_items(truth_dir: str | Path, item_ids: Any) -> ItemTruth:
    """The true factors, quality and price of `item_ids` (in that order) and the formula's constants."""
    t = _truth(truth_dir)
    rows = _lookup(np.asarray(item_ids, dtype=np.int64).ravel(), t.item_id, "item")
    return ItemTruth(t.factors[rows], t.quality[rows], t.price[rows], t.params)


def true_probabilities(
    truth_dir: str | Path, user_ids: Any, item_ids: Any, at: dt.datetime | dt.date | str
) -> tuple[np.ndarray, np.ndarray]:
    """P(click | shown at position 1) and P(purchase | shown at position 1) per (user, item) pair at time `at`.

    `user_ids` and `item_ids` broadcast against each other: equal lengths give pairs, shapes (n, 1) and (m,)
    a user × item grid. The formula is the generator's own, with the constants of truth/params.json.
    """
    t = _truth(truth_dir)
    users = np.asarray(user_ids, dtype=np.int64)
    items = np.asarray(item_ids, dtype=np.int64)
    shape = np.broadcast_shapes(users.shape, items.shape)
    s = float(_interest_weight(np.array(_to_us(_parse_start(at))), t.start_us, t.end_us))
    if users.ndim == 2 and users.shape[1] == 1 and (items.ndim == 1 or (items.ndim == 2 and items.shape[0] == 1)):
        u_rows = _lookup(users[:, 0], t.user_id, "user")  # a grid: one matrix product
        i_rows = _lookup(items.ravel(), t.item_id, "item")
        affinity = _interest(t.u_start[u_rows], t.u_end[u_rows], s) @ t.factors[i_rows].T
        p_click, p_buy = _probabilities(affinity, t.quality[i_rows][None, :], t.price[i_rows][None, :], t.params)
    else:
        users, items = np.broadcast_arrays(users, items)
        u_rows = _lookup(users.ravel(), t.user_id, "user")
        i_rows = _lookup(items.ravel(), t.item_id, "item")
        affinity = np.einsum("nd,nd->n", _interest(t.u_start[u_rows], t.u_end[u_rows], s), t.factors[i_rows])
        p_click, p_buy = _probabilities(affinity, t.quality[i_rows], t.price[i_rows], t.params)
    return p_click.reshape(shape), (p_click * p_buy).reshape(shape)

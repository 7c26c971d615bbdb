# ruff: noqa: SIM905  (word lists are easier to edit as text)
"""An application-like database generated server-side in SQL, with realistic entropy.

Tables (ids are dense bigints, so "append 1%" and "update a contiguous 1%" are easy):

- ``people``    — names from the word lists below, NHS-number-like ids, dates of birth, e-mail,
                  phone, street address, town, postcode, registration time;
- ``events``    — five per person: kind, timestamptz, numeric amount, status, a random reference
                  and free-text notes made of random words (frequent words picked more often);
- ``documents`` — one per person: a jsonb document with tags, line items and a comment.

The word lists are built here and sent as array literals; every row is made by
``INSERT ... SELECT ... FROM generate_series`` so a gigabyte takes minutes, not hours. The data is
meant to compress roughly 3-4x with gzip or zstd (high-entropy identifiers and numbers mixed with
skewed word picks), unlike pgbench's blank filler. ``python bench/appdb.py --batches 2`` prints the
SQL for inspection.
"""

from __future__ import annotations

import argparse
import random

FIRST_NAMES = """
Oliver George Harry Noah Jack Leo Arthur Muhammad Oscar Charlie Jacob Thomas Henry William Alfie Joshua
Freddie Archie Ethan Isaac Alexander Joseph Edward Samuel Max Daniel Arlo Lucas Mohammed Theo Logan
Sebastian Reggie Finley Rory Adam Hugo Albert Teddy Harrison Dylan Elijah Louie Benjamin Mason Jude
Olivia Amelia Isla Ava Mia Ivy Lily Isabella Rosie Sophia Grace Willow Freya Florence Emily Ella Poppy
Evie Elsie Charlotte Evelyn Sienna Sofia Daisy Phoebe Sophie Alice Harper Matilda Ruby Emilia Maya
Millie Isabelle Eva Luna Jessica Elizabeth Aria Violet Esme Imogen Margaret Susan Patricia Linda Barbara
Aisha Fatima Priya Anjali Deepak Ravi Sanjay Wei Li Chen Yusuf Omar Zainab Amara Chidi Kwame Ngozi
Siobhan Niamh Ciaran Eoin Aoife Dafydd Rhys Gareth Megan Bethan Callum Fraser Morag Hamish Ewan
""".split()

SURNAMES = """
Smith Jones Taylor Brown Williams Wilson Johnson Davies Patel Robinson Wright Thompson Evans Walker White
Roberts Green Hall Thomas Clarke Jackson Wood Harris Edwards Turner Martin Cooper Hill Ward Hughes Moore
Clark King Harrison Lewis Baker Lee Allen Morris Khan Scott Watson Davis Parker James Bennett Young Phillips
Richardson Mitchell Bailey Carter Cook Singh Shaw Bell Collins Morgan Kelly Begum Miller Cox Marshall
Simpson Anderson Ellis Adams Wilkinson Ward Murphy Price Campbell Grant Fletcher Chapman Holmes Palmer
Mason Rogers Barker Knight Lloyd Butler Russell Barnes Dixon Hunt Stevens Kaur Ali Ahmed Hussain Chen
Nguyen Okafor Mensah Kowalski Nowak Rossi Silva Murray Graham Stewart Reid Ross Fraser Gordon Hamilton
Sutherland Mackenzie Jenkins Pritchard Owen Howells Rees Gallagher Doherty Byrne Walsh OBrien Quinn
""".split()

TOWNS = """
London Birmingham Manchester Leeds Sheffield Bristol Liverpool Leicester Coventry Bradford Nottingham
Hull Newcastle Stoke Southampton Derby Portsmouth Brighton Plymouth Northampton Reading Luton Wolverhampton
Bolton Bournemouth Norwich Swindon Swansea Southend Middlesbrough Peterborough Cardiff Sunderland Warrington
Huddersfield Slough Oxford Cambridge York Poole Ipswich Telford Exeter Gloucester Blackpool Chelmsford
Colchester Crawley Gateshead Rotherham Preston Blackburn Cheltenham Chester Worcester Lincoln Bath Carlisle
Durham Harrogate Inverness Aberdeen Dundee Glasgow Edinburgh Perth Stirling Belfast Derry Newry Wrexham
""".split()

STREETS = """
High Station Church Main Park Victoria Green Manor Mill Queens Kings Grange Windsor Albert School
Alexander Springfield York Richmond Highfield Chestnut Meadow Orchard Willow Oak Cedar Beech Elm Ash
Hawthorn Maple Rowan Birch Holly Heather Valley Brook River Bridge Castle Abbey Priory Market North
""".split()

STREET_KINDS = ["Road", "Street", "Lane", "Avenue", "Close", "Drive", "Way", "Crescent", "Gardens", "Place"]

COMMON_WORDS = """
the of and to in is was for on that with as at by it from be this have are not or an which had but
patient reported feeling better after new medication review booked follow up appointment next week
called about payment invoice overdue reminder sent customer account updated address changed phone
number verified identity checked records scanned letter received referral from practice clinic
hospital discharge summary blood pressure normal range repeat prescription requested declined approved
pending cancelled rescheduled missed attended arrived late early waiting list priority routine urgent
note copied into file manager informed team lead escalated resolved closed reopened query complaint
feedback positive negative neutral survey completed returned email text message voicemail left no
answer spoke with daughter son wife husband carer neighbour advised to contact again if symptoms
persist worsen improve gradually stable monitoring continues weekly monthly quarterly annual check
order dispatched delivered returned refunded exchanged damaged missing item replacement courier tracking
warehouse stock level low reorder supplier contract renewal discount applied price adjusted tax rate
shipping free standard express weekend delivery slot booked confirmed changed failed retry card
declined bank transfer direct debit setup mandate amended cancelled balance outstanding paid partially
""".split()

SENTENCES = [
    "Patient reported feeling better after the new medication.",
    "Follow-up appointment booked for next week.",
    "Called about the overdue invoice; reminder sent by email.",
    "Address changed at the customer's request.",
    "Identity verified with two documents.",
    "Referral letter received from the practice and scanned.",
    "Discharge summary added to the record.",
    "Blood pressure within the normal range.",
    "Repeat prescription requested through the app.",
    "Appointment rescheduled at short notice.",
    "No answer; voicemail left asking to call back.",
    "Spoke with daughter, who will pass the message on.",
    "Advised to contact the surgery again if symptoms persist.",
    "Order dispatched with tracked courier.",
    "Item reported damaged on arrival; replacement arranged.",
    "Refund issued to the original card.",
    "Direct debit mandate set up and confirmed.",
    "Payment declined by the bank; customer informed.",
    "Complaint logged and escalated to the team lead.",
    "Issue resolved; case closed.",
    "Customer asked for a copy of their records.",
    "Consent form signed and uploaded.",
    "Test results normal; no further action needed.",
    "Results reviewed by the clinician; letter to follow.",
    "Stock low; reorder placed with the supplier.",
    "Delivery slot changed to Saturday morning.",
    "Account balance outstanding; payment plan agreed.",
    "Survey completed; feedback positive.",
    "Duplicate record merged.",
    "Phone number updated and verified by text message.",
]

SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ra",
    "ten",
    "sor",
    "vel",
    "da",
    "pri",
    "no",
    "gal",
    "fen",
    "tri",
    "ma",
    "shu",
    "bel",
    "cor",
    "ind",
    "lux",
    "ver",
    "tam",
    "qui",
    "ros",
    "nel",
    "dor",
    "phe",
    "ash",
    "ux",
]

EVENT_KINDS = [
    "login",
    "logout",
    "payment",
    "refund",
    "appointment",
    "prescription",
    "referral",
    "message",
    "call",
    "visit",
    "order",
    "delivery",
    "complaint",
    "review",
    "update",
    "consent",
    "test",
    "result",
    "invoice",
    "reminder",
]
STATUSES = ["new", "pending", "approved", "declined", "completed", "cancelled", "settled", "on_hold"]
DOC_TYPES = ["order", "assessment", "care_plan", "invoice", "questionnaire", "consent_form", "letter"]
DOMAINS = ["example.com", "mail.example.org", "post.example.net", "nhs.example.uk", "inbox.example.co.uk"]


def vocabulary(size: int = 2000, seed: int = 7) -> list[str]:
    """Common words first (picked most often), then made-up words for a long tail."""
    rng = random.Random(seed)
    words = list(dict.fromkeys(COMMON_WORDS))
    seen = set(words)
    while len(words) < size:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def sql_array(items: list[str]) -> str:
    return "ARRAY[" + ",".join("'" + item.replace("'", "''") + "'" for item in items) + "]::text[]"


def setup_sql() -> str:
    """Word lists as immutable SQL functions (array constants, parsed once per statement)."""
    lists = {
        "sentences": SENTENCES,
        "first_names": FIRST_NAMES,
        "surnames": SURNAMES,
        "towns": TOWNS,
        "streets": STREETS,
        "street_kinds": STREET_KINDS,
        "vocab": vocabulary(),
        "event_kinds": EVENT_KINDS,
        "statuses": STATUSES,
        "doc_types": DOC_TYPES,
        "domains": DOMAINS,
    }
    parts = ["CREATE SCHEMA IF NOT EXISTS gen;"]
    for name, items in lists.items():
        parts.append(
            f"CREATE OR REPLACE FUNCTION gen.{name}() RETURNS text[] LANGUAGE sql IMMUTABLE PARALLEL SAFE "
            f"AS $$ SELECT {sql_array(items)} $$;"
        )
    parts.append("""
-- pick(a, skew): a random element; skew > 1 favours the start of the list (Zipf-like word use).
CREATE OR REPLACE FUNCTION gen.pick(a text[], skew float8 DEFAULT 1) RETURNS text LANGUAGE sql VOLATILE
AS $$ SELECT a[1 + floor(power(random(), skew) * cardinality(a))::int] $$;
-- words(n): n random words from the vocabulary, frequent words favoured.
CREATE OR REPLACE FUNCTION gen.words(n int) RETURNS text LANGUAGE sql VOLATILE
AS $$ SELECT string_agg(v[1 + floor(power(random(), 4.0) * cardinality(v))::int], ' ')
      FROM gen.vocab() AS v, generate_series(1, n) $$;
-- digits(n): n random decimal digits.
CREATE OR REPLACE FUNCTION gen.digits(n int) RETURNS text LANGUAGE sql VOLATILE
AS $$ SELECT lpad((floor(random() * 10 ^ least(n, 15)))::bigint::text, n, '0') $$;
CREATE OR REPLACE FUNCTION gen.letters(n int) RETURNS text LANGUAGE sql VOLATILE
AS $$ SELECT string_agg(chr(65 + floor(random() * 26)::int), '') FROM generate_series(1, n) $$;

CREATE TABLE IF NOT EXISTS people (
    id bigint NOT NULL,
    nhs_number text NOT NULL,
    title text,
    first_name text NOT NULL,
    last_name text NOT NULL,
    date_of_birth date NOT NULL,
    email text,
    phone text,
    address_line1 text,
    town text,
    postcode text,
    registered_at timestamptz NOT NULL,
    updated_at timestamptz
);
CREATE TABLE IF NOT EXISTS events (
    id bigint NOT NULL,
    person_id bigint NOT NULL,
    kind text NOT NULL,
    occurred_at timestamptz NOT NULL,
    amount numeric(12,2),
    currency text NOT NULL,
    status text NOT NULL,
    channel text NOT NULL,
    created_by text NOT NULL,
    reference text NOT NULL,
    notes text
);
CREATE TABLE IF NOT EXISTS documents (
    id bigint NOT NULL,
    person_id bigint NOT NULL,
    created_at timestamptz NOT NULL,
    doc jsonb NOT NULL
);
""")
    return "\n".join(parts)


def people_sql(first: int, count: int) -> str:
    last = first + count - 1
    return f"""
INSERT INTO people
SELECT g,
       gen.digits(10),
       (ARRAY['Mr','Mrs','Ms','Miss','Dr','Mx',NULL])[1 + floor(random() * 7)::int],
       f, l,
       date '1930-01-01' + floor(random() * 30000)::int,
       lower(f) || '.' || lower(l) || (g % 1000)::text || '@' || gen.pick(gen.domains()),
       '07' || gen.digits(9),
       (1 + floor(random() * 250))::int::text || ' ' || gen.pick(gen.streets()) || ' ' || gen.pick(gen.street_kinds()),
       gen.pick(gen.towns(), 1.5),
       gen.letters(2) || (1 + floor(random() * 30))::int::text || ' ' || floor(random() * 10)::int::text
           || gen.letters(2),
       timestamptz '2015-01-01 00:00:00+00' + random() * interval '3000 days',
       CASE WHEN random() < 0.3 THEN timestamptz '2023-01-01 00:00:00+00' + random() * interval '700 days' END
FROM generate_series({first}, {last}) AS g,
     LATERAL (SELECT gen.pick(gen.first_names(), 1.3) AS f, gen.pick(gen.surnames(), 1.3) AS l, g AS gg) AS n;
"""


def events_sql(first: int, count: int, people_max: int) -> str:
    last = first + count - 1
    return f"""
INSERT INTO events
SELECT g,
       1 + floor(random() * {people_max})::bigint,
       gen.pick(gen.event_kinds(), 1.8),
       date_trunc('second', timestamptz '2019-01-01 00:00:00+00'
           + (g::float8 / {max(last, 1)}) * interval '1800 days' + random() * interval '1 day'),
       CASE WHEN random() < 0.8 THEN round((random() * random() * 2000)::numeric, 2) END,
       CASE WHEN random() < 0.95 THEN 'GBP' ELSE (ARRAY['EUR','USD'])[1 + floor(random() * 2)::int] END,
       gen.pick(gen.statuses(), 1.6),
       (ARRAY['web','app','phone','post','clinic','batch'])[1 + floor(power(random(), 2) * 6)::int],
       lower(gen.pick(gen.first_names(), 2)) || '.' || lower(gen.pick(gen.surnames(), 2)),
       substr(md5(random()::text), 1, 12),
       CASE WHEN random() < 0.85 THEN gen.pick(gen.sentences(), 1.5) || ' '
           || gen.words(2 + (g % 19)::int + floor(random() * 6)::int) END
FROM generate_series({first}, {last}) AS g;
"""


def documents_sql(first: int, count: int, people_max: int) -> str:
    last = first + count - 1
    return f"""
INSERT INTO documents
SELECT g,
       1 + floor(random() * {people_max})::bigint,
       timestamptz '2019-01-01 00:00:00+00' + random() * interval '1800 days',
       jsonb_build_object(
           'type', gen.pick(gen.doc_types()),
           'version', 1 + floor(random() * 5)::int,
           'source', (ARRAY['web','app','phone','post','clinic'])[1 + floor(random() * 5)::int],
           'tags', (SELECT jsonb_agg(gen.pick(gen.vocab(), 3)) FROM generate_series(1, 1 + (g % 4)::int)),
           'items', (SELECT jsonb_agg(jsonb_build_object(
                         'sku', upper(substr(md5(random()::text), 1, 8)),
                         'qty', 1 + floor(random() * 4)::int,
                         'price', round((random() * 100)::numeric, 2),
                         'description', gen.words(2 + i % 5)))
                     FROM generate_series(1, 1 + (g % 5)::int) AS i),
           'comment', gen.words(5 + (g % 17)::int),
           'reviewed', random() < 0.5)
FROM generate_series({first}, {last}) AS g;
"""


# One batch: this many people, EVENTS_PER_PERSON events each and one document each.
BATCH_PEOPLE = 20_000
EVENTS_PER_PERSON = 5


def batch_sql(batch: int, batch_people: int = BATCH_PEOPLE) -> list[str]:
    """The statements of batch number ``batch`` (0-based); ids continue from earlier batches."""
    p0 = batch * batch_people + 1
    e0 = batch * batch_people * EVENTS_PER_PERSON + 1
    people_max = (batch + 1) * batch_people
    return [
        people_sql(p0, batch_people),
        events_sql(e0, batch_people * EVENTS_PER_PERSON, people_max),
        documents_sql(p0, batch_people, people_max),
    ]


FINISH_SQL = """
ALTER TABLE people ADD PRIMARY KEY (id);
ALTER TABLE events ADD PRIMARY KEY (id);
ALTER TABLE documents ADD PRIMARY KEY (id);
CREATE INDEX events_person_idx ON events (person_id);
CREATE INDEX events_occurred_idx ON events (occurred_at);
CREATE INDEX documents_person_idx ON documents (person_id);
CREATE INDEX people_name_idx ON people (last_name, first_name);
"""


def change_sql(max_ids: dict[str, int], percent: float = 1.0) -> list[str]:
    """Application-like change: ``percent`` % of each table's rows updated within one contiguous id
    range (starting in the middle), and ``percent`` % new rows appended after the current maximum id.

    ``max_ids`` maps table name to its current maximum id (see :data:`MAX_IDS_SQL`)."""
    fraction = percent / 100.0
    np_, ne, nd = max_ids["people"], max_ids["events"], max_ids["documents"]
    kp, ke, kd = (max(1, int(n * fraction)) for n in (np_, ne, nd))
    return [
        f"UPDATE people SET phone = '07' || gen.digits(9), updated_at = now() "
        f"WHERE id BETWEEN {np_ // 2} AND {np_ // 2 + kp - 1};",
        f"UPDATE events SET status = 'settled', amount = coalesce(amount, 0) + 1 "
        f"WHERE id BETWEEN {ne // 2} AND {ne // 2 + ke - 1};",
        f"UPDATE documents SET doc = doc || jsonb_build_object('reviewed', true, "
        f"'version', (doc->>'version')::int + 1) WHERE id BETWEEN {nd // 2} AND {nd // 2 + kd - 1};",
        people_sql(np_ + 1, kp),
        events_sql(ne + 1, ke, np_ + kp),
        documents_sql(nd + 1, kd, np_ + kp),
    ]


MAX_IDS_SQL = (
    "SELECT (SELECT max(id) FROM people) || ' ' || (SELECT max(id) FROM events) || ' ' || "
    "(SELECT max(id) FROM documents);"
)


def parse_max_ids(text: str) -> dict[str, int]:
    people, events, documents = (int(x) for x in text.split())
    return {"people": people, "events": events, "documents": documents}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=1, help="Batches of generated rows to print.")
    parser.add_argument("--change", action="store_true", help="Print the 1%% change instead.")
    args = parser.parse_args()
    if args.change:
        n = args.batches * BATCH_PEOPLE
        print("\n".join(change_sql({"people": n, "events": n * EVENTS_PER_PERSON, "documents": n})))
        return
    print(setup_sql())
    for batch in range(args.batches):
        print("\n".join(batch_sql(batch)))
    print(FINISH_SQL)


if __name__ == "__main__":
    main()

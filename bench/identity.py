"""Identity benchmark (PDQm ITI-78 search, PIXm ITI-83 $ihe-pix) on PostgreSQL at scale.

What it does, in order:

1. creates a throwaway PostgreSQL database ``rix_bench_id_<size>_<hex>`` on 127.0.0.1:5432
   (user postgres) and runs the migrations (``app.storage.migrations.upgrade``); or, with
   ``--reuse-db NAME``, uses a database kept by an earlier run (``--keep-db NAME``) and skips
   the load;
2. loads N Patient records (``--patients``), generated deterministically from ``--seed``:
   French family names (a few hundred, Zipf-weighted, with accents, particles and ~8%
   hyphenated double names) and given names (one or two, by gender), birth dates uniform over
   1930-2020, gender, a home address (street, city, postcode), one of 20 sites with its IPP
   in ``https://fhir.rix.example/sid/ipp/site-NN``; ~30% of the records carry an INS
   (``urn:oid:1.2.250.1.213.1.4.8``) with the FR Core identity-reliability extension (VALI or
   QUAL for 85% of them, PROV/RECUP otherwise); ~10% of the persons have a second record at
   another site with the same trusted INS (so PIXm has a link to return).

   The records go through the real storage code, ``Repository(session, registry).create``,
   ``--batch`` records per transaction inside ``Runtime.build(settings)``'s sessions, in
   ``--procs`` processes: the resource, history and search-index rows are exactly what the
   server writes. Identity state (``--identity``):

   - ``bulk`` (default): the ``identity_record`` row of each record is computed with
     ``app.identity.traits.traits_of`` (what ``Vigilance.on_write`` stores) and COPYed in the
     same transaction; after the load, one SQL statement writes the ``identity_link`` rows
     (``linked``, basis ``ins``) of records sharing a trusted INS, one sets ``person_id`` to
     the smallest record id of each person, one sets the homonym flags. Work items (Tasks for
     suspected duplicates) are not created.
   - ``listener``: ``Vigilance(repo).on_write`` runs on every create, as in the server (INS
     links, person ids, duplicate screening and its Tasks, homonym flags). Much slower: its
     screening reads every record born the same day (or day/month transposed).

   Then ``ANALYZE``;
3. starts one ``rix serve`` (RIX_ENV=test, RIX_DATA_DIR a temp dir, RIX_LOG_LEVEL=warning,
   audit on as by default) and, with an ``admin`` development token, times sequential
   requests (one client, keep-alive), after ``--warmup`` requests of each kind:

   a. ITI-78 ``GET /fhir/Patient?family=F&given=G&birthdate=D`` of a random loaded record:
      the stored spelling for half the queries, an upper-case accent-less variant for the
      other half; checked: the record (and its linked record, same name and birth date) is
      among the matches;
   b. ITI-83 ``GET /fhir/Patient/$ihe-pix?sourceIdentifier=<ipp system>|<ipp>``, at least
      half of them for records with a linked record; checked: exactly the person's other
      records (targetId; the source record itself may be listed or not) and every identifier
      of the person's records except the source identifier (targetIdentifier);
   c. ``GET /fhir/Patient?identifier=<ipp system>|<ipp>``; checked: exactly that record;
   d. (``names``) ITI-78 by name alone, ``GET /fhir/Patient?family=F&given=G&_count=20`` (stored
      or upper-case accent-less spelling, as in a.); checked: something matches.

   The kinds are interleaved (a, b, c, a, ...) so that machine noise hits them alike
   (``--kinds`` times only some of them); p50/p95/p99 per kind;
4. with the server stopped: the same searches' SQL, compiled as the server compiles it
   (``SearchParser`` + ``Compiler``), timed on a direct connection for the first
   ``--sql-queries`` records, and ``EXPLAIN (ANALYZE, BUFFERS)`` of one query of each kind
   (and of the PIXm lookups);
5. writes a JSON summary to ``bench/out/`` and drops the database unless ``--keep-db`` or
   ``--reuse-db``.

Examples::

    python bench/identity.py --patients 100000
    python bench/identity.py --patients 1000000 --keep-db rix_bench_id_1m
    python bench/identity.py --patients 1000000 --reuse-db rix_bench_id_1m --queries 1000
    python bench/identity.py --reuse-db rix_bench_id_1m --kinds iti83,identifier --sql-queries 0
    python bench/identity.py --drop rix_bench_id_1m
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
# Run as `python bench/identity.py`, this file's folder comes first on sys.path: put the
# project root there instead (bench/fhir_core.py would shadow the `fhir_core` package).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

OUT = ROOT / "bench" / "out"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
FHIR_JSON = "application/fhir+json"
TARGETS_MS = {"iti78": 50.0, "iti83": 10.0}

# -- realistic content ------------------------------------------------------------------------

# Frequent French family names, roughly by frequency (the weights below are Zipf-like), with
# their accents; particles and compound names are kept as written in civil status.
FAMILY = """
Martin|Bernard|Thomas|Petit|Robert|Richard|Durand|Dubois|Moreau|Laurent|Simon|Michel|Lefèvre|
Leroy|Roux|David|Bertrand|Morel|Fournier|Girard|Bonnet|Dupont|Lambert|Fontaine|Rousseau|
Vincent|Muller|Lefebvre|Faure|André|Mercier|Blanc|Guérin|Boyer|Garnier|Chevalier|François|
Legrand|Gauthier|Garcia|Perrin|Robin|Clément|Morin|Nicolas|Henry|Roussel|Mathieu|Gautier|
Masson|Marchand|Duval|Denis|Dumont|Marie|Lemaire|Noël|Meyer|Dufour|Meunier|Brun|Blanchard|
Giraud|Joly|Rivière|Lucas|Brunet|Gaillard|Barbier|Arnaud|Martinez|Gérard|Roche|Renard|
Schmitt|Roy|Leroux|Colin|Vidal|Caron|Picard|Roger|Fabre|Aubert|Lemoine|Renaud|Dumas|Lacroix|
Olivier|Philippe|Bourgeois|Pierre|Benoît|Rey|Leclerc|Payet|Rolland|Leclercq|Guillaume|
Lecomte|Lopez|Jean|Dupuy|Guillot|Hubert|Berger|Carpentier|Sanchez|Dupuis|Moulin|Louis|
Deschamps|Huet|Vasseur|Perez|Boucher|Fleury|Royer|Klein|Jacquet|Adam|Paris|Poirier|Marty|
Aubry|Guyot|Carré|Charles|Renault|Charpentier|Ménard|Maillard|Baron|Bertin|Bailly|Hervé|
Schneider|Fernandez|Le Gall|Collet|Léger|Bouvier|Julien|Prévost|Millet|Perrot|Daniel|
Le Roux|Cousin|Germain|Breton|Besson|Langlois|Rémy|Le Goff|Pelletier|Lévêque|Perrier|
Leblanc|Barré|Lebrun|Marchal|Weber|Mallet|Hamon|Boulanger|Jacob|Monnier|Michaud|Rodriguez|
Guichard|Gillet|Étienne|Grondin|Poulain|Tessier|Chevallier|Collin|Chauvin|Da Silva|Bouchet|
Gay|Lemaître|Bénard|Maréchal|Humbert|Reynaud|Antoine|Hoarau|Perret|Barthélémy|Cordier|
Pichon|Lejeune|Gilbert|Lamy|Delaunay|Pasquier|Carlier|Laporte|Gomez|Texier|Leveque|
Buisson|Bérard|Lacombe|Hebert|Hoareau|Riviere|Brunel|Lemonnier|Rossignol|Courtois|
Le Corre|Guillou|Lagarde|Descamps|Bigot|Ollivier|Fabre|Giraud|Delmas|Camus|Vallée|
Chrétien|Faivre|Gros|Mary|Charrier|Pons|Leduc|Turpin|Blondel|Tanguy|Lebon|Jolly|Favre|
Guyon|Pineau|Thibault|Bonneau|Leconte|Bousquet|Besnard|Josse|Drouet|Dumoulin|Leclère|
Salmon|Ferrand|Lecoq|Maillet|Labbé|Ferré|Blin|Cohen|Gosselin|Le Guen|Jourdan|Laine|
Navarro|Chauveau|Hardy|Coste|Ribeiro|Bouvet|Girault|Tournier|Mangin|Weiss|Raynaud|
Mailly|Benard|Lesage|Marechal|Delattre|Bailleul|Fouquet|Le Bihan|Kerbrat|Quéré|Le Floch|
Nguyen|Tran|Diallo|Traoré|Benali|Haddad|Mansour|Ben Ahmed|Boukhari|Ferreira|Pereira|
Da Costa|Dos Santos|Fernandes|Gonçalves|de La Fontaine|de Villiers|d'Arcy|Saint-Martin|
Saint-Cyr|Le Bris|Le Moal|Lê|Ngô|Ouédraogo|Müller|Schäfer|Nuñez|Ibáñez|Ménétrier|Pétain|
Dubœuf|Cœur|Lætitia|Hélie|Prud'homme|N'Diaye|Ba|Sy|Sow|Fall|Kane|Mbappé|Zidane|Benzema|
Grégoire|Régnier|Héraud|Vérité|Désiré|Sénéchal|Crépin|Févre|Lhôte|Ragué|Thévenin|Jégou|
"""
GIVEN_F = """
Marie|Jeanne|Françoise|Monique|Catherine|Nathalie|Isabelle|Sylvie|Anne|Martine|Christine|
Jacqueline|Nicole|Sophie|Valérie|Sandrine|Stéphanie|Céline|Véronique|Chantal|Julie|Aurélie|
Camille|Léa|Emma|Chloé|Manon|Inès|Zoé|Louise|Jade|Alice|Lina|Rose|Anna|Ambre|Léna|Mila|
Juliette|Lola|Lucie|Clara|Sarah|Laura|Émilie|Élodie|Hélène|Claire|Agnès|Brigitte|Danielle|
Dominique|Denise|Odette|Simone|Yvette|Germaine|Madeleine|Suzanne|Thérèse|Paulette|Renée|
Colette|Josette|Ginette|Huguette|Micheline|Solange|Geneviève|Éliane|Andrée|Odile|Annie|
Pascale|Patricia|Corinne|Florence|Karine|Virginie|Séverine|Audrey|Mélanie|Émilie|Laëtitia|
Gaëlle|Maëlle|Anaïs|Océane|Noémie|Mathilde|Pauline|Margaux|Charlotte|Éloïse|Héloïse|Clémence|
Marine|Justine|Morgane|Élise|Capucine|Apolline|Agathe|Victoire|Romane|Adèle|Iris|Nina|
Marie-Claire|Marie-Thérèse|Marie-Christine|Anne-Marie|Anne-Sophie|Marie-France|Marie-Hélène|
Marie-Laure|Marie-Pierre|Marie-José|Marie-Noëlle|Marie-Ange|Anne-Laure|Anne-Claire|
Fatima|Aïcha|Khadija|Yasmine|Nour|Sofia|Amina|Leïla|Myriam|Salomé|Maëva|Océane|Cléa|Naëlle|
Bérénice|Ségolène|Ghislaine|Bernadette|Marguerite|Yvonne|Lucienne|Raymonde|Gisèle|Arlette|
Évelyne|Maryse|Mireille|Nadine|Régine|Roselyne|Viviane|Joëlle|Noëlle|Eugénie|Albane|
"""
GIVEN_M = """
Jean|Pierre|Michel|André|Philippe|René|Louis|Alain|Jacques|Bernard|Marcel|Daniel|Roger|
Robert|Paul|Claude|Christian|Henri|Georges|Nicolas|François|Patrick|Gérard|Christophe|
Joseph|Éric|Frédéric|Laurent|Stéphane|David|Pascal|Sébastien|Julien|Thierry|Olivier|
Raymond|Maurice|Thomas|Guy|Yves|Lucas|Hugo|Gabriel|Léo|Raphaël|Arthur|Louis|Jules|Adam|
Maël|Nathan|Paul|Gabin|Sacha|Noé|Tom|Mohamed|Aaron|Théo|Timéo|Enzo|Mathis|Noah|Ethan|
Antoine|Alexandre|Maxime|Romain|Quentin|Kévin|Jérémy|Jérôme|Benoît|Cédric|Grégory|Loïc|
Yannick|Fabrice|Ludovic|Mickaël|Anthony|Florian|Guillaume|Vincent|Damien|Adrien|Bastien|
Clément|Valentin|Baptiste|Matthieu|Aurélien|Benjamin|Samuel|Simon|Victor|Martin|Félix|
Émile|Célestin|Aimé|Gaëtan|Joël|Noël|Hervé|Régis|Rémi|Gilles|Serge|Didier|Dominique|
Jean-Pierre|Jean-Claude|Jean-Marie|Jean-Luc|Jean-François|Jean-Paul|Jean-Louis|Jean-Michel|
Jean-Jacques|Jean-Marc|Jean-Philippe|Jean-Baptiste|Pierre-Yves|Pierre-Louis|Marc-Antoine|
Jean-Noël|Jean-Rémi|Jean-Yves|Paul-Henri|Louis-Marie|Charles-Édouard|Jean-Sébastien|
Ahmed|Karim|Mehdi|Youssef|Rayan|Ilyes|Amine|Bilal|Sofiane|Nassim|Idriss|Moussa|Mamadou|
Fernand|Lucien|Gaston|Albert|Émilien|Honoré|Armand|Léon|Edmond|Octave|Anatole|Évariste|
Léonce|Aristide|Jérémie|Zoël|Anaël|Ewen|Erwan|Goulven|Tanguy|Yann|Gwénaël|Brieuc|Corentin|
"""


def _names(block: str) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for name in block.replace("\n", "").split("|"):
        if name.strip():
            seen.setdefault(name.strip(), None)
    return tuple(seen)


FAMILY_NAMES = _names(FAMILY)
GIVEN_NAMES = {"female": _names(GIVEN_F), "male": _names(GIVEN_M)}
STREETS = (
    "rue de la République", "rue Victor-Hugo", "avenue Jean-Jaurès", "rue Pasteur",
    "boulevard Gambetta", "place de l'Église", "rue du Moulin", "chemin des Vignes",
    "allée des Tilleuls", "rue Émile-Zola", "impasse des Lilas", "rue de la Gare",
    "avenue du Général-de-Gaulle", "rue des Écoles", "route de Lyon", "quai Saint-Étienne",
)  # fmt: skip
# (city, postcode): each site's catchment is its city and a few neighbours.
CITIES = (
    ("Lyon", "69003"), ("Villeurbanne", "69100"), ("Vénissieux", "69200"),
    ("Saint-Étienne", "42000"), ("Roanne", "42300"), ("Grenoble", "38000"),
    ("Échirolles", "38130"), ("Chambéry", "73000"), ("Annecy", "74000"),
    ("Clermont-Ferrand", "63000"), ("Besançon", "25000"), ("Dijon", "21000"),
    ("Mâcon", "71000"), ("Chalon-sur-Saône", "71100"), ("Bourg-en-Bresse", "01000"),
    ("Valence", "26000"), ("Montélimar", "26200"), ("Nîmes", "30000"), ("Orléans", "45000"),
    ("Besançon", "25000"), ("Aix-les-Bains", "73100"), ("Évian-les-Bains", "74500"),
    ("Le Puy-en-Velay", "43000"), ("Vichy", "03200"), ("Montluçon", "03100"),
    ("Aurillac", "15000"), ("Privas", "07000"), ("Annonay", "07100"),
)  # fmt: skip
SITES = 20
IPP_PREFIX = "https://fhir.rix.example/sid/ipp/"  # app.fhir.naming.IPP_PREFIX
INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"  # app.fhir.naming.INS_NIR
RELIABILITY_URL = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-identity-reliability"
RELIABILITY_CS = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0445"
IDENTIFIER_TYPE_CS = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-identifier-type"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
FR_CORE_PATIENT = "https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient"
# Shares of persons: INS known; INS trusted (VALI/QUAL) among those; second record (another
# site, same trusted INS) among the trusted: 0.235 * 0.85 * 0.5 = 10% of persons have two
# records, and (0.235 + 0.1) / 1.1 = 30% of the records carry an INS.
P_INS, P_TRUSTED, P_SECOND = 0.235, 0.85, 0.5
BIRTH_FIRST = date(1930, 1, 1)
BIRTH_DAYS = (date(2020, 12, 31) - BIRTH_FIRST).days + 1


def _zipf(n: int, exponent: float = 0.5) -> list[float]:
    """Cumulative Zipf-like weights: the first names of a list are the most frequent."""
    weights = [1 / (rank**exponent) for rank in range(1, n + 1)]
    total, out, acc = sum(weights), [], 0.0
    for w in weights:
        acc += w / total
        out.append(acc)
    return out


FAMILY_CUM = _zipf(len(FAMILY_NAMES))
GIVEN_CUM = {g: _zipf(len(names)) for g, names in GIVEN_NAMES.items()}


def site_name(n: int) -> str:
    return f"site-{n + 1:02d}"


def _nir_key(number: str) -> str:
    return f"{97 - int(number) % 97:02d}"


def _person(rng: random.Random, number: int) -> dict[str, Any]:
    """The civil identity of person `number` (unique INS when it has one)."""
    roll = rng.random()
    gender = "female" if roll < 0.497 else "male" if roll < 0.995 else "unknown"
    kind = gender if gender != "unknown" else rng.choice(("female", "male"))
    names, cum = GIVEN_NAMES[kind], GIVEN_CUM[kind]
    given = [rng.choices(names, cum_weights=cum)[0]]
    if rng.random() < 0.3:
        second = rng.choices(names, cum_weights=cum)[0]
        if second != given[0]:
            given.append(second)
    family = rng.choices(FAMILY_NAMES, cum_weights=FAMILY_CUM)[0]
    if rng.random() < 0.08:
        other = rng.choices(FAMILY_NAMES, cum_weights=FAMILY_CUM)[0]
        if other != family:
            family = f"{family}-{other}"
    birth = BIRTH_FIRST + timedelta(days=rng.randrange(BIRTH_DAYS))
    person: dict[str, Any] = {
        "gender": gender,
        "family": family,
        "given": given,
        "birth": birth.isoformat(),
        "home": rng.randrange(SITES),
        "ins": None,
        "status": "PROV" if rng.random() < 0.4 else None,
        "second": False,
    }
    if rng.random() < P_INS:
        sex = "2" if gender == "female" else "1"
        body = f"{sex}{birth.year % 100:02d}{birth.month:02d}{number:08d}"
        person["ins"] = body + _nir_key(body)
        trusted = rng.random() < P_TRUSTED
        person["status"] = (
            rng.choice(("VALI", "QUAL")) if trusted else rng.choice(("PROV", "RECUP"))
        )
        person["second"] = trusted and rng.random() < P_SECOND
    return person


def _patient(rng: random.Random, person: dict[str, Any], site: int, record: int) -> dict[str, Any]:
    """A Patient record of `person` at `site` (record number `record`: its IPP)."""
    city, postcode = CITIES[(site * 3 + rng.randrange(3)) % len(CITIES)]
    identifiers: list[dict[str, Any]] = [
        {
            "use": "usual",
            "type": {"coding": [{"system": V2_0203, "code": "PI"}]},
            "system": IPP_PREFIX + site_name(site),
            "value": f"{record + 10_000_000:08d}",
        }
    ]
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "meta": {"profile": [FR_CORE_PATIENT]},
    }
    if person["status"]:
        reliability: list[dict[str, Any]] = [
            {
                "url": "identityStatus",
                "valueCoding": {"system": RELIABILITY_CS, "code": person["status"]},
            }
        ]
        if person["status"] in ("VALI", "QUAL"):
            reliability.append({"url": "validationDate", "valueDate": "2023-06-01"})
        resource["extension"] = [{"url": RELIABILITY_URL, "extension": reliability}]
    if person["ins"]:
        identifiers.append(
            {
                "use": "official",
                "type": {"coding": [{"system": IDENTIFIER_TYPE_CS, "code": "INS-NIR"}]},
                "system": INS_SYSTEM,
                "value": person["ins"],
            }
        )
    resource.update(
        identifier=identifiers,
        active=True,
        name=[{"use": "official", "family": person["family"], "given": list(person["given"])}],
        gender=person["gender"],
        birthDate=person["birth"],
        address=[
            {
                "use": "home",
                "line": [f"{rng.randint(1, 180)} {rng.choice(STREETS)}"],
                "city": city,
                "postalCode": postcode,
                "country": "FRA",
            }
        ],
    )
    return resource


def chunk_records(seed: int, chunk: int, size: int) -> list[dict[str, Any]]:
    """Records chunk*size .. chunk*size+size-1 (deterministic): persons in order, a person's
    second record (another site, same INS) right after its first."""
    rng = random.Random(seed * 1_000_003 + chunk)
    first = chunk * size
    out: list[dict[str, Any]] = []
    while len(out) < size:
        number = first + len(out)
        person = _person(rng, number)
        out.append(_patient(rng, person, person["home"], number))
        if person["second"] and len(out) < size:
            other = (person["home"] + 1 + rng.randrange(SITES - 1)) % SITES
            out.append(_patient(rng, person, other, first + len(out)))
    return out


def chunk_sizes(total: int, size: int) -> list[int]:
    full, rest = divmod(total, size)
    return [size] * full + ([rest] if rest else [])


# -- databases --------------------------------------------------------------------------------


def pg_url(name: str) -> str:
    return make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def _admin(sql: str) -> None:
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(sql))
    admin.dispose()


def create_database(name: str) -> str:
    assert name.startswith("rix_bench_"), name
    _admin(f'CREATE DATABASE "{name}"')
    return pg_url(name)


def drop_database(name: str) -> None:
    assert name.startswith("rix_bench_"), name  # never anything but a benchmark database
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def settings_for(url: str, data_dir: Path) -> Any:
    from app.config import Settings

    return Settings(env="test", database_url=url, data_dir=data_dir)


# -- load ---------------------------------------------------------------------------------------

_LOADER: dict[str, Any] = {}


def _loader_init(url: str, data_dir: str, identity: str) -> None:
    from app.services.runtime import Runtime

    _LOADER.update(rt=Runtime.build(settings_for(url, Path(data_dir))), identity=identity)


_RECORD_COLUMNS = (
    "patient_id",
    "person_id",
    "birth_date",
    "names",
    "ins",
    "ins_trusted",
    "systems",
    "homonym",
)


def _load_chunk(job: tuple[int, int, int, int]) -> tuple[int, float, float]:
    """Store one chunk in one transaction; (records, seconds generating, seconds storing)."""
    from app.identity.traits import traits_of
    from app.identity.vigilance import Vigilance
    from app.storage.db import transaction
    from app.storage.repository import Repository

    seed, chunk, size, count = job
    t0 = time.perf_counter()
    records = chunk_records(seed, chunk, size)[:count]
    t1 = time.perf_counter()
    rt = _LOADER["rt"]
    with transaction(rt.sessions, write=True) as session:
        repo = Repository(session, rt.registry)
        if _LOADER["identity"] == "listener":
            repo.listeners.append(Vigilance(repo, "bench loader").on_write)
            for resource in records:
                repo.create(resource)
        else:
            rows = []
            for resource in records:
                stored = repo.create(resource)
                t = traits_of(stored.id, resource)
                rows.append(
                    (
                        t.patient_id,
                        t.patient_id,
                        t.birth_date,
                        t.names_key,
                        t.ins,
                        t.ins_trusted,
                        " ".join(sorted(t.systems)),
                        False,
                    )
                )
            raw: Any = session.connection().connection.dbapi_connection
            with raw.cursor() as cursor:
                columns = ", ".join(_RECORD_COLUMNS)
                with cursor.copy(f"COPY identity_record ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
    return len(records), t1 - t0, time.perf_counter() - t1


# What Vigilance.on_write leaves for these records, set-based (bulk mode): INS links between
# records with the same trusted INS, the person (smallest record id of the component: records
# here pair at most two by two), and the homonym flag (same names and birth date as a record of
# another person known to be distinct: a different trusted INS).
IDENTITY_SQL = (
    """
    INSERT INTO identity_link (a, b, state, basis, author, reason, at)
    SELECT x.patient_id, y.patient_id, 'linked', 'ins', 'bench loader',
           'same trusted INS ' || x.ins, (now() AT TIME ZONE 'utc')::timestamp(3)
    FROM identity_record x
    JOIN identity_record y ON y.ins = x.ins AND y.patient_id > x.patient_id
    WHERE x.ins_trusted AND y.ins_trusted
    """,
    """
    UPDATE identity_record r SET person_id = l.a
    FROM identity_link l WHERE l.state = 'linked' AND r.patient_id = l.b AND l.a < r.person_id
    """,
    """
    UPDATE identity_record r SET homonym = true
    WHERE r.names <> '' AND r.ins_trusted AND EXISTS (
        SELECT 1 FROM identity_record o
        WHERE o.birth_date = r.birth_date AND o.names = r.names AND o.person_id <> r.person_id
          AND o.ins_trusted AND o.ins <> r.ins)
    """,
)


def load(url: str, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Load --patients records; returns what the load did and how fast."""
    from app.services.runtime import Runtime

    Runtime.build(settings_for(url, data_dir)).engine.dispose()  # creates the data dir's keys
    sizes = chunk_sizes(args.patients, args.batch)
    jobs = [(args.seed, i, args.batch, n) for i, n in enumerate(sizes)]
    print(
        f"load: {args.patients:,} Patients in {len(jobs)} transactions of {args.batch}, "
        f"{args.procs} processes, identity {args.identity}",
        flush=True,
    )
    done, gen_s, store_s = 0, 0.0, 0.0
    start = last_t = time.perf_counter()
    last_n = 0
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(
        args.procs, initializer=_loader_init, initargs=(url, str(data_dir), args.identity)
    ) as pool:
        for n, g, s in pool.imap_unordered(_load_chunk, jobs):
            done, gen_s, store_s = done + n, gen_s + g, store_s + s
            now = time.perf_counter()
            if now - last_t >= args.progress or done == args.patients:
                print(
                    f"  {done:>10,} records  {done / (now - start):7.0f}/s overall  "
                    f"{(done - last_n) / (now - last_t):7.0f}/s last {now - last_t:.0f} s  "
                    f"load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
                last_t, last_n = now, done
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {
        "records": done,
        "identity": args.identity,
        "procs": args.procs,
        "batch": args.batch,
        "seconds": round(seconds, 1),
        "records_per_s": round(done / seconds, 1),
        "generate_cpu_s": round(gen_s, 1),
        "store_s": round(store_s, 1),
        "loadavg_end": os.getloadavg(),
    }
    print(f"loaded {done:,} records in {seconds:.0f} s: {done / seconds:.0f}/s", flush=True)
    engine = create_engine(url)
    if args.identity == "bulk":
        t0 = time.perf_counter()
        with engine.begin() as conn:
            for sql in IDENTITY_SQL:
                conn.exec_driver_sql(sql)
        out["identity_sql_s"] = round(time.perf_counter() - t0, 1)
        print(f"identity links, persons, homonyms (SQL): {out['identity_sql_s']} s", flush=True)
    t0 = time.perf_counter()
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    out["analyze_s"] = round(time.perf_counter() - t0, 1)
    print(f"ANALYZE: {out['analyze_s']} s", flush=True)
    engine.dispose()
    return out


def describe(url: str) -> dict[str, Any]:
    """What the database holds."""
    engine = create_engine(url)
    with engine.connect() as conn:
        q = conn.exec_driver_sql
        out = {
            "resources": dict(q("SELECT resource_type, count(*) FROM resource GROUP BY 1").all()),
            "identity_records": q("SELECT count(*) FROM identity_record").scalar(),
            "ins_records": q("SELECT count(*) FROM identity_record WHERE ins IS NOT NULL").scalar(),
            "trusted_ins_records": q(
                "SELECT count(*) FROM identity_record WHERE ins_trusted"
            ).scalar(),
            "persons": q("SELECT count(DISTINCT person_id) FROM identity_record").scalar(),
            "links": {
                k: v
                for k, v in q(
                    "SELECT state || '/' || basis, count(*) FROM identity_link GROUP BY 1"
                ).all()
            },
            "homonyms": q("SELECT count(*) FROM identity_record WHERE homonym").scalar(),
            "index_rows": {
                t: q(f"SELECT reltuples::bigint FROM pg_class WHERE relname = '{t}'").scalar()
                for t in ("sp_string", "sp_token", "sp_date", "sp_uri", "resource_version")
            },
            "db_bytes": q("SELECT pg_database_size(current_database())").scalar(),
        }
    engine.dispose()
    return out


# -- the queries --------------------------------------------------------------------------------


def plain_upper(text_: str) -> str:
    """`Le Gall-Dupré` -> `LE GALL-DUPRE`: what a form without accents sends."""
    decomposed = unicodedata.normalize("NFKD", text_)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def sample_records(url: str, n: int, seed: int) -> list[dict[str, Any]]:
    """`n` random live Patient records with what the checks need: the record's IPP, name and
    birth date, and every record of its person with their identifiers."""
    rng = random.Random(seed)
    engine = create_engine(url)
    with engine.connect() as conn:
        q = conn.exec_driver_sql
        low, high = q("SELECT min(pk), max(pk) FROM resource WHERE resource_type = 'Patient'").one()
        # Half the sample from persons with two records (PIXm must return the other one).
        linked_ids = [
            r[0]
            for r in q(
                "SELECT CASE WHEN random() < 0.5 THEN a ELSE b END FROM identity_link "
                "WHERE state = 'linked' ORDER BY random() LIMIT %(n)s",
                {"n": n // 2},
            )
        ]
        pks = sorted({rng.randint(low, high) for _ in range(3 * n)})
        rows = q(
            "SELECT resource_id FROM resource WHERE pk = ANY(%(pks)s) "
            "AND resource_type = 'Patient' AND NOT deleted",
            {"pks": pks},
        ).all()
        others = [r[0] for r in rows if r[0] not in set(linked_ids)]
        rng.shuffle(others)
        chosen = linked_ids + others[: n - len(linked_ids)]
        members = q(
            "SELECT s.patient_id, m.patient_id FROM identity_record s "
            "JOIN identity_record m ON m.person_id = s.person_id "
            "WHERE s.patient_id = ANY(%(ids)s)",
            {"ids": chosen},
        ).all()
        person: dict[str, set[str]] = {}
        for source, member in members:
            person.setdefault(source, set()).add(member)
        every = sorted({m for ms in person.values() for m in ms} | set(chosen))
        content: dict[str, str] = dict(
            q(
                "SELECT resource_id, content FROM resource WHERE resource_type = 'Patient' "
                "AND resource_id = ANY(%(ids)s)",
                {"ids": every},
            ).all()
        )
    engine.dispose()
    out = []
    for rid in chosen:
        resource = json.loads(content[rid])
        ipp = next(i for i in resource["identifier"] if i["system"].startswith(IPP_PREFIX))
        records = person.get(rid, {rid})
        out.append(
            {
                "id": rid,
                "family": resource["name"][0]["family"],
                "given": resource["name"][0]["given"][0],
                "birth": resource["birthDate"],
                "ipp": (ipp["system"], ipp["value"]),
                "members": sorted(records),
                "identifiers": {
                    (i["system"], i["value"])
                    for m in records
                    for i in json.loads(content[m])["identifier"]
                },
            }
        )
    rng.shuffle(out)
    return out


def iti78_pairs(rec: dict[str, Any], variant: bool) -> list[tuple[str, str]]:
    family, given = rec["family"], rec["given"]
    if variant:
        family, given = plain_upper(family), plain_upper(given)
    return [("family", family), ("given", given), ("birthdate", rec["birth"])]


def identifier_pairs(rec: dict[str, Any]) -> list[tuple[str, str]]:
    system, value = rec["ipp"]
    return [("identifier", f"{system}|{value}")]


def check_iti78(rec: dict[str, Any], body: dict[str, Any]) -> int:
    ids = {e["resource"]["id"] for e in body.get("entry", [])}
    missing = set(rec["members"]) - ids
    if missing and (body.get("total") or 0) <= len(ids):
        raise AssertionError(f"ITI-78 did not find {sorted(missing)} for {rec}: {ids}")
    for e in body.get("entry", []):
        assert e["resource"]["birthDate"] == rec["birth"], e["resource"]
    return int(body.get("total") or len(ids))


def check_pix(rec: dict[str, Any], body: dict[str, Any]) -> None:
    params = body.get("parameter", [])
    refs = {p["valueReference"]["reference"] for p in params if p["name"] == "targetId"}
    idents = {
        (p["valueIdentifier"]["system"], p["valueIdentifier"]["value"])
        for p in params
        if p["name"] == "targetIdentifier"
    }
    # The person's other records must be there; the source record itself may be listed or not
    # (the server dropped it from targetId on 2026-11-22; either reading of ITI-83 passes).
    refs.discard(f"Patient/{rec['id']}")
    want_refs = {f"Patient/{m}" for m in rec["members"] if m != rec["id"]}
    want_idents = rec["identifiers"] - {rec["ipp"]}
    if refs != want_refs or idents != want_idents:
        raise AssertionError(
            f"ITI-83 for {rec['ipp']}: targetId {sorted(refs)} (want {sorted(want_refs)}), "
            f"targetIdentifier {sorted(idents)} (want {sorted(want_idents)})"
        )


def check_identifier(rec: dict[str, Any], body: dict[str, Any]) -> None:
    ids = [e["resource"]["id"] for e in body.get("entry", [])]
    if ids != [rec["id"]] or body.get("total") != 1:
        raise AssertionError(
            f"identifier search for {rec['ipp']}: {ids}, total {body.get('total')}"
        )


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50/p95/p99/mean/max in milliseconds."""
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

    return {
        "n": len(ordered),
        "p50": round(at(0.50), 2),
        "p95": round(at(0.95), 2),
        "p99": round(at(0.99), 2),
        "mean": round(statistics.fmean(ordered) * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


# -- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One `rix serve` subprocess."""

    def __init__(
        self,
        url: str,
        data_dir: Path,
        env: dict[str, str] | None = None,
        log_name: str = "server.log",
    ) -> None:
        """`env`: more RIX_ settings for this server (e.g. RIX_CONSENT_ENFORCEMENT=false);
        `log_name`: its log file in `data_dir` (two servers on one data dir: two logs)."""
        self.url, self.data_dir = url, data_dir
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / log_name

    def start(self) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RIX_")}
        env.update(
            RIX_DATABASE_URL=self.url,
            RIX_ENV="test",
            RIX_DATA_DIR=str(self.data_dir),
            RIX_LOG_LEVEL="warning",
        )
        env.update(self.extra_env)
        port = free_port()
        rix = Path(sys.executable).with_name("rix")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(rix), "serve", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rix serve exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    return f"http://127.0.0.1:{port}/fhir"
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("rix serve did not answer within 120 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


KINDS = ("iti78", "iti83", "identifier", "names")


def measure_api(
    base: str,
    token: str,
    records: list[dict[str, Any]],
    warmup: int,
    kinds: tuple[str, ...] = KINDS,
) -> dict[str, Any]:
    """Sequential requests, kinds interleaved; latency per kind and what the answers held."""
    samples: dict[str, list[float]] = {
        "iti78_stored": [],
        "iti78_variant": [],
        "iti83_linked": [],
        "iti83_single": [],
        "identifier": [],
        "names": [],
    }
    totals: list[int] = []
    headers = {"Accept": FHIR_JSON, "Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=60, headers=headers) as http:

        def get(path: str, params: list[tuple[str, str]]) -> tuple[float, dict[str, Any]]:
            t0 = time.perf_counter()
            response = http.get(path, params=tuple(params))
            elapsed = time.perf_counter() - t0
            if response.status_code != 200:
                raise RuntimeError(
                    f"GET {path} {params}: {response.status_code} {response.text[:500]}"
                )
            return elapsed, response.json()

        for n, rec in enumerate(records):
            measured = n >= warmup
            variant = n % 2 == 1
            if "iti78" in kinds:
                elapsed, body = get("/Patient", iti78_pairs(rec, variant))
                total = check_iti78(rec, body)
                if measured:
                    samples["iti78_variant" if variant else "iti78_stored"].append(elapsed)
                    totals.append(total)
            if "iti83" in kinds:
                system, value = rec["ipp"]
                source = [("sourceIdentifier", f"{system}|{value}")]
                elapsed, body = get("/Patient/$ihe-pix", source)
                check_pix(rec, body)
                if measured:
                    linked = len(rec["members"]) > 1
                    samples["iti83_linked" if linked else "iti83_single"].append(elapsed)
            if "identifier" in kinds:
                elapsed, body = get("/Patient", identifier_pairs(rec))
                check_identifier(rec, body)
                if measured:
                    samples["identifier"].append(elapsed)
            if "names" in kinds:
                # ITI-78 by name alone (no birth date): a prefix match on both names.
                elapsed, body = get("/Patient", [*iti78_pairs(rec, variant)[:2], ("_count", "20")])
                if body.get("total") is None or body["total"] < 1:
                    raise AssertionError(f"no match by name for {rec}")
                if measured:
                    samples["names"].append(elapsed)
    out: dict[str, Any] = {k: percentiles(v) for k, v in samples.items() if v}
    if "iti78" in kinds:
        out["iti78"] = percentiles(samples["iti78_stored"] + samples["iti78_variant"])
        out["iti78_matches"] = {
            "mean": round(statistics.fmean(totals), 2),
            "max": max(totals),
            "distribution": {str(k): totals.count(k) for k in sorted(set(totals))},
        }
    if "iti83" in kinds:
        out["iti83"] = percentiles(samples["iti83_linked"] + samples["iti83_single"])
    return out


# -- the SQL behind them ------------------------------------------------------------------------


def measure_sql(
    url: str, records: list[dict[str, Any]], warmup: int, kinds: tuple[str, ...] = KINDS
) -> dict[str, Any]:
    """The searches' SQL as the server compiles it, and the PIXm lookups, on a direct
    connection (no HTTP, no policy, no audit); EXPLAIN ANALYZE of one of each."""
    from app.config import Settings
    from app.fhir.registry import build_registry
    from app.fhir.search import SearchParser
    from app.identity.vigilance import Vigilance
    from app.storage.db import make_engine, session_factory
    from app.storage.repository import Repository

    settings = Settings(database_url=url)
    registry = build_registry()
    parser = SearchParser(
        registry,
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
        max_include=settings.max_include,
    )
    engine = make_engine(url, pool_size=1)
    times: dict[str, list[float]] = {
        "iti78_count": [],
        "iti78_page": [],
        "identifier_count": [],
        "identifier_page": [],
        "pix_by_identifier": [],
        "pix_members": [],
        "pix_live_many": [],
    }
    with session_factory(engine)() as session:
        repo = Repository(session, registry)
        vig = Vigilance(repo)
        snapshot = repo.max_pk()
        session.rollback()

        def statements(pairs: list[tuple[str, str]]) -> tuple[Any, Any]:
            query = parser.parse("Patient", pairs)
            query.snapshot = snapshot
            return repo.compiler.select_count(query), repo.compiler.select_page(query)

        for n, rec in enumerate(records):
            for kind, pairs in (
                ("iti78", iti78_pairs(rec, n % 2 == 1)),
                ("identifier", identifier_pairs(rec)),
            ):
                if kind not in kinds:
                    continue
                count_stmt, page_stmt = statements(pairs)
                t0 = time.perf_counter()
                session.execute(count_stmt).scalar_one()
                t1 = time.perf_counter()
                session.execute(page_stmt).all()
                t2 = time.perf_counter()
                session.rollback()
                if n >= warmup:
                    times[f"{kind}_count"].append(t1 - t0)
                    times[f"{kind}_page"].append(t2 - t1)
            t0 = time.perf_counter()
            found = repo.by_identifier("Patient", *rec["ipp"])
            t1 = time.perf_counter()
            members = vig.members(s.id for s in found)
            t2 = time.perf_counter()
            repo.live_many({("Patient", m) for m in members})
            t3 = time.perf_counter()
            session.rollback()
            assert members == set(rec["members"]), (members, rec)
            if n >= warmup:
                times["pix_by_identifier"].append(t1 - t0)
                times["pix_members"].append(t2 - t1)
                times["pix_live_many"].append(t3 - t2)

        # EXPLAIN (ANALYZE, BUFFERS) of one query of each kind (a record from the middle)
        rec = records[len(records) // 2]
        plans: dict[str, str] = {}
        items: list[tuple[str, Any]] = []
        for kind, pairs in (
            ("iti78_stored", iti78_pairs(rec, False)),
            ("iti78_variant", iti78_pairs(rec, True)),
            ("identifier", identifier_pairs(rec)),
        ):
            count_stmt, page_stmt = statements(pairs)
            items += [(f"{kind}_count", count_stmt), (f"{kind}_page", page_stmt)]
        for name, stmt in items:
            conn = session.connection()
            compiled = stmt.compile(dialect=conn.dialect)
            rows = conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, BUFFERS) " + str(compiled), compiled.params
            ).all()
            plans[name] = str(compiled) + "\n\n" + "\n".join(r[0] for r in rows)
            session.rollback()
        system, value = rec["ipp"]
        pix_sql = {
            "pix_by_identifier": (
                "SELECT * FROM resource WHERE pk IN (SELECT resource_pk FROM sp_token WHERE "
                "resource_type = 'Patient' AND param = 'identifier' AND code = %(v)s AND "
                "system = %(s)s) AND deleted = false"
            ),
            "pix_has_identifier_system": (
                "SELECT resource_pk FROM sp_token WHERE resource_type = 'Patient' AND "
                "param = 'identifier' AND system = %(s)s LIMIT 1"
            ),
        }
        for name, sql in pix_sql.items():
            conn = session.connection()
            rows = conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, BUFFERS) " + sql, {"s": system, "v": value}
            ).all()
            plans[name] = sql + "\n\n" + "\n".join(r[0] for r in rows)
            session.rollback()
    engine.dispose()
    return {"ms": {k: percentiles(v) for k, v in times.items() if v}, "plans": plans}


# -- the run ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    engine = create_engine(PG_ADMIN_URL)
    with engine.connect() as conn:
        pg = conn.exec_driver_sql("SHOW server_version").scalar()
        pg_settings = {
            k: conn.exec_driver_sql(f"SHOW {k}").scalar()
            for k in ("shared_buffers", "work_mem", "effective_cache_size", "random_page_cost")
        }
    engine.dispose()
    return {
        "nproc": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "postgresql": pg,
        "postgresql_settings": pg_settings,
        "loadavg_start": os.getloadavg(),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


CODE_FILES = (
    "app/storage/compiler.py",
    "app/storage/repository.py",
    "app/storage/tables.py",
    "app/identity/vigilance.py",
    "app/services/identity.py",
    "app/services/resources.py",
)


def code_state() -> dict[str, str]:
    """Fingerprints of the code measured (the tree changes between runs; no VCS here)."""
    out = {}
    for name in CODE_FILES:
        path = ROOT / name
        stamp = datetime.fromtimestamp(path.stat().st_mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out[name] = f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:12]} {stamp}"
    return out


def _db_name(name: str) -> str:
    return name if name.startswith("rix_bench_") else f"rix_bench_{name}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--patients", type=int, default=100_000, help="Patient records to load")
    parser.add_argument("--queries", type=int, default=500, help="measured requests of each kind")
    parser.add_argument("--warmup", type=int, default=50, help="warm-up requests of each kind")
    parser.add_argument("--identity", choices=("bulk", "listener"), default="bulk")
    parser.add_argument("--procs", type=int, default=2, help="loader processes")
    parser.add_argument("--batch", type=int, default=2000, help="records per transaction")
    parser.add_argument("--seed", type=int, default=20260301)
    parser.add_argument("--progress", type=float, default=30, help="seconds between reports")
    parser.add_argument("--keep-db", metavar="NAME", help="load into database NAME and keep it")
    parser.add_argument("--reuse-db", metavar="NAME", help="measure a kept database, no load")
    parser.add_argument("--drop", metavar="NAME", help="drop a kept benchmark database and exit")
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help="request kinds to time, comma-separated (default: iti78,iti83,identifier,names)",
    )
    parser.add_argument(
        "--sql-queries", type=int, default=100, help="SQL timing: queries of each kind (0: skip)"
    )
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if set(kinds) - set(KINDS):
        parser.error(f"--kinds takes some of {', '.join(KINDS)}")

    if args.drop:
        drop_database(_db_name(args.drop))
        print(f"dropped {_db_name(args.drop)}")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "code": code_state(),
        "patients": args.patients,
        "queries_per_kind": args.queries,
        "warmup_per_kind": args.warmup,
        "kinds": args.kinds,
    }
    if args.reuse_db:
        name = _db_name(args.reuse_db)
        url = pg_url(name)
    else:
        n = args.patients
        tag = f"{n // 1000}k" if n < 1_000_000 else f"{n / 1e6:g}m".replace(".", "_")
        name = (
            _db_name(args.keep_db) if args.keep_db else f"rix_bench_id_{tag}_{uuid.uuid4().hex[:8]}"
        )
        url = create_database(name)
    result["database"] = name
    print(f"database: {name}", flush=True)
    data_dir = Path(tempfile.mkdtemp(prefix="rix-bench-identity-"))
    server = Server(url, data_dir)
    try:
        from app.storage.migrations import upgrade

        upgrade(url)
        if not args.reuse_db:
            result["load"] = load(url, data_dir, args)
        result["contents"] = describe(url)
        print(f"contents: {json.dumps(result['contents'])}", flush=True)
        records = sample_records(url, args.warmup + args.queries, args.seed)
        base = server.start()
        print(f"rix serve at {base}", flush=True)
        from app.auth.tokens import issue_dev_token

        token = issue_dev_token(
            settings_for(url, data_dir),
            subject="bench-admin",
            name="Benchmark admin",
            role="admin",
            ttl=24 * 3600,
        )
        result["loadavg_measure_start"] = os.getloadavg()
        t0 = time.perf_counter()
        api = measure_api(base, token, records, args.warmup, kinds)
        result["api_seconds"] = round(time.perf_counter() - t0, 1)
        result["loadavg_measure_end"] = os.getloadavg()
        result["api_ms"] = api
        server.stop()
        for kind, value in api.items():
            print(f"{kind:>14}: {value}")
        result["targets"] = {
            kind: {
                "p95_ms": api[kind]["p95"],
                "target_ms": target,
                "met": api[kind]["p95"] <= target,
            }
            for kind, target in TARGETS_MS.items()
            if kind in api
        }
        print(f"targets (p95): {json.dumps(result['targets'])}", flush=True)
        if args.sql_queries:
            warm = min(args.warmup, 10)
            sql = measure_sql(url, records[: warm + args.sql_queries], warm, kinds)
            result["sql_ms"], result["plans"] = sql["ms"], sql["plans"]
            for name_, plan in sql["plans"].items():
                print(f"--- {name_} ---\n{plan}\n")
            for name_, ms in sql["ms"].items():
                print(f"SQL {name_:>18}: {ms}")
    finally:
        server.stop()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = OUT / f"identity_{args.patients}_{stamp}.json"
        path.write_text(json.dumps(result, indent=1, default=str))
        print(f"summary: {path}")
        shutil.rmtree(data_dir, ignore_errors=True)
        if args.keep_db or args.reuse_db:
            print(f"kept: {name}")
        else:
            drop_database(name)
            print(f"dropped: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Compares segmentd's BreakdownCustomers with DuckDB, polars and PostgreSQL
on the same data set, answering two questions as of one evaluation time:

Q1  demographics over precomputed features: the external customers with an
    income of at least 50,000, by country x gender x age band, with each
    group's customer count, total spend and mean purchase count. DuckDB,
    polars and PostgreSQL read a per-customer feature table (the customer's
    columns plus purchase_count and total_spend_minor) built before timing.
Q2  from raw purchases: every customer by frequency class x relationship x
    engagement stage. DuckDB, polars and PostgreSQL compute it from the raw
    purchases and engagement events joined to the customers, timed whole.

Customers who object to profiling are in no group. Every engine must give
the same groups with the same counts (and, for Q1, the same total spend):
the run exits with status 1, printing the differences, when they do not.
Missed speed targets are reported, never fatal.

Run by bench/compare.sh, which makes the data, starts the servers and
generates the gRPC stubs; see there.
"""

import argparse
import datetime
import os
import statistics
import sys
import time

ENGINES = ("segmentd", "duckdb", "polars", "postgres")
DAY = 86_400

# The rule and dimensions of the two questions, as sent to segmentd.
Q1_DIMENSIONS = ["customer.country", "customer.gender", "customer.age_band"]
Q1_FILTER = 'customer.relationship == "EXTERNAL" && customer.income >= 50000.0'
Q2_DIMENSIONS = ["features.frequency", "customer.relationship", "features.stage"]

# Q1's filter in minor units: income (a double, minor / 100) >= 50000.0.
Q1_MIN_INCOME = 50000.0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="directory of the CSV files from `load export`")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated subset of " + ",".join(ENGINES))
    parser.add_argument("--addr", default="127.0.0.1:50152", help="segmentd's address")
    parser.add_argument("--stubs", help="directory of the Python stubs generated from proto/ (for segmentd)")
    parser.add_argument("--pg-host", help="PostgreSQL's Unix socket directory (for postgres)")
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--pg-work-mem", default="1GB", help="work_mem of the PostgreSQL session")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per query and engine")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before them")
    parser.add_argument("--at", default="2026-11-23T00:00:00Z", help="the evaluation time T (UTC)")
    parser.add_argument("--show", action="store_true", help="print every group of both answers")
    args = parser.parse_args()
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in args.engines if e not in ENGINES]
    if unknown or not args.engines:
        parser.error(f"unknown engines {unknown}; choose from {','.join(ENGINES)}")
    if "segmentd" in args.engines and not args.stubs:
        parser.error("segmentd needs --stubs")
    if "postgres" in args.engines and not args.pg_host:
        parser.error("postgres needs --pg-host")
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup at least 0")
    at = datetime.datetime.fromisoformat(args.at.replace("Z", "+00:00"))
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.timezone.utc)
    args.t = int(at.timestamp())
    args.t_date = at.astimezone(datetime.timezone.utc).date()
    return args


# --- The SQL both SQL engines run; only integer division and the date parts differ.


def age_sql(t_date, year, month, day):
    """Whole years from `birth_date` to T's date, as in segmentd: one less
    before the birthday; NULL without a birth date or if born after T."""
    return f"""CASE
        WHEN birth_date IS NULL OR birth_date > DATE '{t_date.isoformat()}' THEN NULL
        ELSE {t_date.year} - {year} - CASE WHEN {month} > {t_date.month} OR
            ({month} = {t_date.month} AND {day} > {t_date.day}) THEN 1 ELSE 0 END END"""


def features_sql(t):
    return f"""
    SELECT c.*, coalesce(p.n, 0) AS purchase_count, coalesce(p.spend, 0) AS total_spend_minor
    FROM customers c LEFT JOIN (
        SELECT customer_id, count(*) AS n, sum(amount_minor) AS spend
        FROM purchases WHERE occurred_at <= {t} GROUP BY customer_id
    ) p ON p.customer_id = c.customer_id"""


def q1_sql(args, year, month, day):
    return f"""
    SELECT country, gender,
           CASE
               WHEN age IS NULL THEN 'UNKNOWN'
               WHEN age < 18 THEN 'UNDER_18'
               WHEN age <= 24 THEN '18_24'
               WHEN age <= 34 THEN '25_34'
               WHEN age <= 44 THEN '35_44'
               WHEN age <= 54 THEN '45_54'
               WHEN age <= 64 THEN '55_64'
               ELSE '65_PLUS' END AS age_band,
           count(*) AS customers, sum(total_spend_minor) AS total_spend_minor,
           avg(purchase_count) AS average_purchase_count
    FROM (
        SELECT coalesce(country, '') AS country, coalesce(gender, 'UNSPECIFIED') AS gender,
               {age_sql(args.t_date, year, month, day)} AS age,
               total_spend_minor, purchase_count
        FROM features
        WHERE relationship = 'EXTERNAL'
          AND annual_income_minor::DOUBLE PRECISION / 100.0::DOUBLE PRECISION >= {Q1_MIN_INCOME}::DOUBLE PRECISION
          AND NOT objects_to_profiling
    ) selected
    GROUP BY 1, 2, 3"""


def q2_sql(args, floor_div):
    t = args.t
    recency = floor_div(f"{t} - p.last", DAY)
    return f"""
    WITH p AS (
        SELECT customer_id, count(*) AS n, min(occurred_at) AS first, max(occurred_at) AS last,
               count(*) FILTER (WHERE occurred_at > {t - 365 * DAY}) AS c365
        FROM purchases WHERE occurred_at <= {t} GROUP BY customer_id
    ), e AS (
        SELECT customer_id, bool_or(type = 'REFERRAL') AS referral,
               bool_or(type = 'FEEDBACK') AS feedback, bool_or(type = 'VISIT') AS visit
        FROM engagements WHERE occurred_at <= {t} GROUP BY customer_id
    ), f AS (
        SELECT c.relationship, coalesce(p.n, 0) AS n, p.c365,
               ({recency})::DOUBLE PRECISION AS recency_days,
               CASE WHEN p.n >= 2 THEN
                   ((p.last - p.first)::DOUBLE PRECISION * 1e9::DOUBLE PRECISION / 86400e9::DOUBLE PRECISION)
                   / (p.n - 1)::DOUBLE PRECISION END AS gap_days,
               coalesce(e.referral, false) AS referral, coalesce(e.feedback, false) AS feedback,
               coalesce(e.visit, false) AS visit
        FROM customers c
        LEFT JOIN p ON p.customer_id = c.customer_id
        LEFT JOIN e ON e.customer_id = c.customer_id
        WHERE NOT c.objects_to_profiling
    )
    SELECT CASE
               WHEN n = 0 THEN 'NONE'
               WHEN n = 1 THEN 'ONE_TIME_BUYER'
               WHEN recency_days > greatest(3.0::DOUBLE PRECISION * gap_days, 180.0::DOUBLE PRECISION) THEN 'LAPSED'
               WHEN c365 >= 4 AND recency_days <= 2.0::DOUBLE PRECISION * gap_days THEN 'FREQUENT_CUSTOMER'
               ELSE 'REPEAT_CUSTOMER' END AS frequency,
           coalesce(relationship, 'UNSPECIFIED') AS relationship,
           CASE
               WHEN referral THEN 'TELLING_OTHERS'
               WHEN feedback THEN 'GIVING_FEEDBACK'
               WHEN n >= 2 THEN 'REBUYING'
               WHEN n = 1 THEN 'JUST_BUYING'
               WHEN visit THEN 'JUST_LOOKING'
               ELSE 'TOTAL_MARKET' END AS stage,
           count(*) AS customers
    FROM f GROUP BY 1, 2, 3"""


def q1_rows(rows):
    """{(country, gender, age band): (count, total spend, mean purchase count)}"""
    return {
        (str(r[0]), str(r[1]), str(r[2])): (int(r[3]), int(r[4]), float(r[5]))
        for r in rows
    }


def q2_rows(rows):
    """{(frequency, relationship, stage): (count, None, None)}"""
    return {(str(r[0]), str(r[1]), str(r[2])): (int(r[3]), None, None) for r in rows}


CUSTOMER_COLUMNS = [
    ("customer_id", "VARCHAR"),
    ("party", "VARCHAR"),
    ("relationship", "VARCHAR"),
    ("department", "VARCHAR"),
    ("birth_date", "DATE"),
    ("gender", "VARCHAR"),
    ("annual_income_minor", "BIGINT"),
    ("currency_code", "VARCHAR"),
    ("country", "VARCHAR"),
    ("city", "VARCHAR"),
    ("language", "VARCHAR"),
    ("consent_email", "VARCHAR"),
    ("objects_to_profiling", "BOOLEAN"),
]
PURCHASE_COLUMNS = [
    ("purchase_id", "VARCHAR"),
    ("customer_id", "VARCHAR"),
    ("occurred_at", "BIGINT"),
    ("amount_minor", "BIGINT"),
    ("currency_code", "VARCHAR"),
    ("quantity", "INTEGER"),
    ("category", "VARCHAR"),
    ("durability", "VARCHAR"),
]
ENGAGEMENT_COLUMNS = [
    ("event_id", "VARCHAR"),
    ("customer_id", "VARCHAR"),
    ("occurred_at", "BIGINT"),
    ("type", "VARCHAR"),
    ("nps_score", "INTEGER"),
    ("channel", "VARCHAR"),
]
TABLES = {
    "customers": CUSTOMER_COLUMNS,
    "purchases": PURCHASE_COLUMNS,
    "engagements": ENGAGEMENT_COLUMNS,
}


class DuckDB:
    name = "DuckDB"

    def __init__(self, args):
        import duckdb

        self.args = args
        self.con = duckdb.connect()  # in memory; threads default to the cores
        for table, columns in TABLES.items():
            types = ", ".join(f"'{c}': '{t}'" for c, t in columns)
            path = os.path.join(args.data, f"{table}.csv")
            self.con.execute(
                f"CREATE TABLE {table} AS SELECT * FROM read_csv('{path}', header = true, "
                f"columns = {{{types}}})"
            )
        self.con.execute(f"CREATE TABLE features AS {features_sql(args.t)}")
        self.q1_text = q1_sql(args, "year(birth_date)", "month(birth_date)", "day(birth_date)")
        self.q2_text = q2_sql(args, lambda a, b: f"({a}) // {b}")
        threads = self.con.execute("SELECT current_setting('threads')").fetchone()[0]
        self.note = f"DuckDB {duckdb.__version__}, in memory, {threads} threads (the default: all cores)"

    def q1(self):
        return q1_rows(self.con.execute(self.q1_text).fetchall())

    def q2(self):
        return q2_rows(self.con.execute(self.q2_text).fetchall())

    def count_excluded(self):
        """(excluded by Q1's filter, excluded in all): the customers who object."""
        return self.con.execute(
            f"""SELECT count(*) FILTER (WHERE relationship = 'EXTERNAL' AND
                       annual_income_minor::DOUBLE PRECISION / 100.0 >= {Q1_MIN_INCOME}),
                       count(*)
                FROM customers WHERE objects_to_profiling"""
        ).fetchone()


class Polars:
    name = "polars"

    def __init__(self, args):
        import polars as pl

        self.pl = pl
        self.args = args
        types = {
            "VARCHAR": pl.String,
            "DATE": pl.Date,
            "BIGINT": pl.Int64,
            "INTEGER": pl.Int32,
            "BOOLEAN": pl.Boolean,
        }
        self.tables = {
            table: pl.read_csv(
                os.path.join(args.data, f"{table}.csv"),
                schema={c: types[t] for c, t in columns},
            )
            for table, columns in TABLES.items()
        }
        spend = (
            self.tables["purchases"]
            .lazy()
            .filter(pl.col("occurred_at") <= args.t)
            .group_by("customer_id")
            .agg(purchase_count=pl.len().cast(pl.Int64), total_spend_minor=pl.col("amount_minor").sum())
        )
        self.features = (
            self.tables["customers"]
            .lazy()
            .join(spend, on="customer_id", how="left")
            .with_columns(pl.col("purchase_count", "total_spend_minor").fill_null(0))
            .collect()
        )
        self.note = f"polars {pl.__version__}, lazy queries, {pl.thread_pool_size()} threads (the default: all cores)"

    def q1(self):
        pl = self.pl
        d = self.args.t_date
        birth = pl.col("birth_date")
        before_birthday = (birth.dt.month() > d.month) | ((birth.dt.month() == d.month) & (birth.dt.day() > d.day))
        age = pl.col("age")
        band = pl.when(age.is_null()).then(pl.lit("UNKNOWN"))
        for limit, name in ((18, "UNDER_18"), (25, "18_24"), (35, "25_34"), (45, "35_44"), (55, "45_54"), (65, "55_64")):
            band = band.when(age < limit).then(pl.lit(name))
        rows = (
            self.features.lazy()
            .filter(
                (pl.col("relationship") == "EXTERNAL")
                & (pl.col("annual_income_minor").cast(pl.Float64) / 100.0 >= Q1_MIN_INCOME)
                & ~pl.col("objects_to_profiling")
            )
            .select(
                pl.col("country").fill_null(""),
                pl.col("gender").fill_null("UNSPECIFIED"),
                # Whole years to T's date, one less before the birthday;
                # null without a birth date or if born after T.
                pl.when(birth.is_null() | (birth > pl.lit(d)))
                .then(None)
                .otherwise(pl.lit(d.year, pl.Int32) - birth.dt.year().cast(pl.Int32) - before_birthday.cast(pl.Int32))
                .alias("age"),
                "total_spend_minor",
                "purchase_count",
            )
            .group_by("country", "gender", band.otherwise(pl.lit("65_PLUS")).alias("age_band"))
            .agg(
                pl.len(),
                pl.col("total_spend_minor").sum(),
                pl.col("purchase_count").mean(),
            )
            .collect()
            .rows()
        )
        return q1_rows(rows)

    def q2(self):
        pl = self.pl
        t = self.args.t
        purchases = (
            self.tables["purchases"]
            .lazy()
            .filter(pl.col("occurred_at") <= t)
            .group_by("customer_id")
            .agg(
                n=pl.len().cast(pl.Int64),
                first=pl.col("occurred_at").min(),
                last=pl.col("occurred_at").max(),
                c365=(pl.col("occurred_at") > t - 365 * DAY).sum(),
            )
        )
        engagements = (
            self.tables["engagements"]
            .lazy()
            .filter(pl.col("occurred_at") <= t)
            .group_by("customer_id")
            .agg(
                referral=(pl.col("type") == "REFERRAL").any(),
                feedback=(pl.col("type") == "FEEDBACK").any(),
                visit=(pl.col("type") == "VISIT").any(),
            )
        )
        n = pl.col("n")
        recency = ((pl.lit(t) - pl.col("last")) // DAY).cast(pl.Float64)
        gap = ((pl.col("last") - pl.col("first")).cast(pl.Float64) * 1e9 / 86400e9) / (n - 1).cast(pl.Float64)
        frequency = (
            pl.when(n == 0).then(pl.lit("NONE"))
            .when(n == 1).then(pl.lit("ONE_TIME_BUYER"))
            .when(recency > pl.max_horizontal(3.0 * gap, pl.lit(180.0))).then(pl.lit("LAPSED"))
            .when((pl.col("c365") >= 4) & (recency <= 2.0 * gap)).then(pl.lit("FREQUENT_CUSTOMER"))
            .otherwise(pl.lit("REPEAT_CUSTOMER"))
        )
        stage = (
            pl.when(pl.col("referral")).then(pl.lit("TELLING_OTHERS"))
            .when(pl.col("feedback")).then(pl.lit("GIVING_FEEDBACK"))
            .when(n >= 2).then(pl.lit("REBUYING"))
            .when(n == 1).then(pl.lit("JUST_BUYING"))
            .when(pl.col("visit")).then(pl.lit("JUST_LOOKING"))
            .otherwise(pl.lit("TOTAL_MARKET"))
        )
        rows = (
            self.tables["customers"]
            .lazy()
            .filter(~pl.col("objects_to_profiling"))
            .select("customer_id", "relationship")
            .join(purchases, on="customer_id", how="left")
            .join(engagements, on="customer_id", how="left")
            .with_columns(
                pl.col("n").fill_null(0),
                pl.col("referral", "feedback", "visit").fill_null(False),
            )
            .group_by(
                frequency.alias("frequency"),
                pl.col("relationship").fill_null("UNSPECIFIED"),
                stage.alias("stage"),
            )
            .agg(pl.len())
            .collect()
            .rows()
        )
        return q2_rows(rows)


class Postgres:
    name = "PostgreSQL"

    def __init__(self, args):
        import psycopg

        self.args = args
        self.con = psycopg.connect(host=args.pg_host, user=args.pg_user, dbname="postgres", autocommit=True)
        self.con.execute(f"SET work_mem = '{args.pg_work_mem}'")
        for table, columns in TABLES.items():
            self.con.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
            self.con.execute(
                f"CREATE TABLE {table} ({', '.join(f'{c} {t}' for c, t in columns)})"
            )
            path = os.path.abspath(os.path.join(self.args.data, f"{table}.csv"))
            with self.con.cursor().copy(f"COPY {table} FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
                with open(path, "rb") as f:
                    while block := f.read(1 << 20):
                        copy.write(block)
        self.con.execute("DROP TABLE IF EXISTS features")
        self.con.execute(f"CREATE TABLE features AS {features_sql(args.t)}")
        for table in (*TABLES, "features"):
            self.con.execute(f"VACUUM ANALYZE {table}")
        self.q1_text = q1_sql(
            args,
            "extract(year FROM birth_date)::int",
            "extract(month FROM birth_date)::int",
            "extract(day FROM birth_date)::int",
        )
        # Integer division truncates, which floors here: the purchases counted are at or before T.
        self.q2_text = q2_sql(args, lambda a, b: f"({a}) / {b}")
        settings = {
            name: self.con.execute(f"SHOW {name}").fetchone()[0]
            for name in ("server_version", "max_parallel_workers_per_gather", "shared_buffers", "work_mem", "jit")
        }
        self.note = (
            f"PostgreSQL {settings['server_version'].split()[0]}, tables without indexes, "
            f"max_parallel_workers_per_gather {settings['max_parallel_workers_per_gather']}, "
            f"shared_buffers {settings['shared_buffers']}, work_mem {settings['work_mem']}, jit {settings['jit']}"
        )

    def q1(self):
        return q1_rows(self.con.execute(self.q1_text).fetchall())

    def q2(self):
        return q2_rows(self.con.execute(self.q2_text).fetchall())


class Segmentd:
    name = "segmentd"

    def __init__(self, args):
        sys.path.insert(0, args.stubs)
        import grpc
        from google.protobuf import timestamp_pb2
        from segmentd.v1 import segmentation_service_pb2 as pb
        from segmentd.v1 import segmentation_service_pb2_grpc as pb_grpc

        self.grpc = grpc
        self.args = args
        self.channel = grpc.insecure_channel(
            args.addr, options=[("grpc.max_receive_message_length", 64 << 20)]
        )
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.stub = pb_grpc.SegmentationServiceStub(self.channel)
        at = timestamp_pb2.Timestamp(seconds=args.t)
        self.q1_request = pb.BreakdownCustomersRequest(
            dimensions=Q1_DIMENSIONS, filter=Q1_FILTER, evaluation_time=at
        )
        self.q2_request = pb.BreakdownCustomersRequest(dimensions=Q2_DIMENSIONS, evaluation_time=at)
        self.responses = {}
        self.note = f"segmentd over gRPC at {args.addr}: wall time of the call from Python, on a warm channel"
        # Fail before the other engines load if the server cannot answer.
        self.call("Q2", self.q2_request)

    def call(self, question, request):
        try:
            response = self.stub.BreakdownCustomers(request, timeout=120)
        except self.grpc.RpcError as e:
            raise SystemExit(
                f"segmentd: BreakdownCustomers ({question}) failed: {e.code().name}: {e.details()}"
                + (
                    "\n(the server does not implement it yet; leave segmentd out with --engines duckdb,polars,postgres)"
                    if e.code() == self.grpc.StatusCode.UNIMPLEMENTED
                    else ""
                )
            )
        self.responses[question] = response
        return response

    def q1(self):
        response = self.call("Q1", self.q1_request)
        return {
            tuple(g.values): (g.customer_count, g.total_spend.minor_units, g.average_purchase_count)
            for g in response.groups
        }

    def q2(self):
        response = self.call("Q2", self.q2_request)
        return {tuple(g.values): (g.customer_count, None, None) for g in response.groups}


def timed(run, warmup, runs):
    """Runs `run` warmup + runs times; returns its last answer and the times
    of the timed runs in seconds."""
    answer = None
    for _ in range(warmup):
        answer = run()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = run()
        times.append(time.perf_counter() - started)
    return answer, times


def differences(question, answers):
    """Lines describing where the engines' answers differ from the first's."""
    names = list(answers)
    reference = names[0]
    lines = []
    for other in names[1:]:
        a, b = answers[reference], answers[other]
        for key in sorted(set(a) | set(b)):
            x, y = a.get(key), b.get(key)
            if x is None or y is None:
                lines.append(f"{question} {'/'.join(key)}: {reference} {x}, {other} {y}")
                continue
            same = x[0] == y[0] and x[1] == y[1]
            if x[2] is not None and y[2] is not None:
                same = same and abs(x[2] - y[2]) <= 1e-9 * max(1.0, abs(x[2]))
            if not same:
                lines.append(f"{question} {'/'.join(key)}: {reference} {x}, {other} {y}")
    return lines


def ms(seconds):
    return f"{seconds * 1e3:.1f} ms" if seconds >= 0.01 else f"{seconds * 1e3:.2f} ms"


def print_answer(question, dimensions, answer):
    print(f"\n{question}: {len(answer)} groups, {sum(v[0] for v in answer.values())} customers\n")
    header = dimensions + ["customers"] + (["total spend (minor)", "mean purchases"] if question == "Q1" else [])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for key, value in sorted(answer.items(), key=lambda kv: (-kv[1][0], kv[0])):
        cells = list(key) + [str(value[0])]
        if question == "Q1":
            cells += [str(value[1]), f"{value[2]:.4f}"]
        print("| " + " | ".join(cells) + " |")


def main():
    args = parse_args()
    makers = {"segmentd": Segmentd, "duckdb": DuckDB, "polars": Polars, "postgres": Postgres}
    engines = {}
    for name in sorted(args.engines, key=lambda n: n != "segmentd"):  # segmentd fails fast
        started = time.perf_counter()
        engines[name] = makers[name](args)
        if name != "segmentd":
            print(f"{engines[name].name}: loaded the CSV files and built the feature table in "
                  f"{time.perf_counter() - started:.1f} s (not timed)", file=sys.stderr)

    answers = {"Q1": {}, "Q2": {}}
    times = {"Q1": {}, "Q2": {}}
    for question in ("Q1", "Q2"):
        for name, engine in engines.items():
            run = engine.q1 if question == "Q1" else engine.q2
            answer, ts = timed(run, args.warmup, args.runs)
            answers[question][engine.name] = answer
            times[question][engine.name] = ts
            print(f"{question} {engine.name}: median {ms(statistics.median(ts))} over {len(ts)} runs", file=sys.stderr)

    problems = differences("Q1", answers["Q1"]) + differences("Q2", answers["Q2"])

    # segmentd's own counts: the selected customers and those it excluded.
    if "segmentd" in engines:
        seg = engines["segmentd"]
        duck = engines.get("duckdb")
        expected = duck.count_excluded() if duck else None
        for question, index in (("Q1", 0), ("Q2", 1)):
            response = seg.responses[question]
            in_groups = sum(g.customer_count for g in response.groups)
            if response.total_count != in_groups:
                problems.append(
                    f"{question} segmentd: total_count {response.total_count}, but its groups hold {in_groups}"
                )
            if expected is not None and response.excluded_count != expected[index]:
                problems.append(
                    f"{question} segmentd: excluded_count {response.excluded_count}, "
                    f"but {expected[index]} of the customers selected object to profiling"
                )
            if response.evaluation_time.seconds != args.t:
                problems.append(f"{question} segmentd: evaluation_time {response.evaluation_time.seconds}, asked {args.t}")

    names = [e.name for e in engines.values()]
    medians = {q: {n: statistics.median(times[q][n]) for n in names} for q in times}
    print()
    print(
        f"Evaluation time {args.at}; median of {args.runs} timed runs after {args.warmup} warm-up, per engine"
        + ("; in brackets, the engine's median over segmentd's." if "segmentd" in engines else ".")
    )
    print()
    has_seg = "segmentd" in names
    header = ["engine", "Q1 demographics (precomputed)", "Q2 frequency x relationship x stage (raw)"]
    print("| " + " | ".join(header) + " |")
    print("|---|---:|---:|")
    for n in names:
        cells = [n]
        for q in ("Q1", "Q2"):
            cell = ms(medians[q][n])
            if has_seg and n != "segmentd":
                cell += f" ({medians[q][n] / medians[q]['segmentd']:.1f}x segmentd)"
            cells.append(cell)
        print("| " + " | ".join(cells) + " |")

    if has_seg:
        print()
        print("| target | measured | met |")
        print("|---|---|---|")
        q1 = medians["Q1"]["segmentd"]
        print(f"| Q1 on segmentd in at most 20 ms | {ms(q1)} | {'yes' if q1 <= 0.020 else 'no'} |")
        if "DuckDB" in names:
            for q, factor in (("Q1", 4), ("Q2", 100)):
                ratio = medians[q]["DuckDB"] / medians[q]["segmentd"]
                print(
                    f"| {q}: segmentd at least {factor}x faster than DuckDB | {ratio:.1f}x | "
                    f"{'yes' if ratio >= factor else 'no'} |"
                )
        else:
            print("| DuckDB targets | not measured (DuckDB left out) | |")

    print()
    for engine in engines.values():
        print(f"- {engine.note}")
    q1_groups = answers["Q1"][names[0]]
    q2_groups = answers["Q2"][names[0]]
    print(
        f"- Q1: {len(q1_groups)} groups of {sum(v[0] for v in q1_groups.values())} customers; "
        f"Q2: {len(q2_groups)} groups of {sum(v[0] for v in q2_groups.values())} customers"
    )
    if args.show:
        print_answer("Q1", ["country", "gender", "age band"], q1_groups)
        print_answer("Q2", ["frequency", "relationship", "stage"], q2_groups)

    if problems:
        print(f"\nTHE ANSWERS DIFFER ({len(problems)} differences):", file=sys.stderr)
        for line in problems[:50]:
            print("  " + line, file=sys.stderr)
        if len(problems) > 50:
            print(f"  ... and {len(problems) - 50} more", file=sys.stderr)
        sys.exit(1)
    if len(names) > 1:
        print(f"- every engine ({', '.join(names)}) gave the same groups and counts, and for Q1 the same total spend")


if __name__ == "__main__":
    main()

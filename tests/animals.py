"""A known small predictions table (10 animals, two models) whose metrics are worked out by hand.

truth:      cat cat cat cat dog dog dog bird bird NULL
prediction: cat cat cat dog dog dog cat bird cat  dog
other:      cat cat dog dog dog dog dog bird bird dog

Predicted classes: bird 1, cat 5, dog 4. Against truth (9 labelled rows): 6 correct.
Confusion (rows truth, columns prediction; bird, cat, dog): [[1,1,0],[0,3,1],[0,1,2]].
prediction vs other: 7 of 10 agree; other against truth: 7 of 9.
"""

from __future__ import annotations

import duckdb

TRUTH = ["cat", "cat", "cat", "cat", "dog", "dog", "dog", "bird", "bird", None]
PREDICTION = ["cat", "cat", "cat", "dog", "dog", "dog", "cat", "bird", "cat", "dog"]
OTHER = ["cat", "cat", "dog", "dog", "dog", "dog", "dog", "bird", "bird", "dog"]
MODEL_IDS = ["animals/1"] * 6 + ["animals/2"] * 4
LABELS = ["bird", "cat", "dog"]
CONFUSION = [[1, 1, 0], [0, 3, 1], [0, 1, 2]]
AGREEMENT = [[1, 0, 0], [1, 2, 2], [0, 0, 4]]  # prediction (rows) vs other (columns)


def write_animals_db(path: str) -> None:
    """Tables `animals` (prediction, truth, other, model_id), `animals_v2` (key, prediction)
    `animals_errors` (2 dead letters) and `keyless` (no key column)."""
    with duckdb.connect(path) as con:
        con.execute(
            "CREATE TABLE animals (key VARCHAR PRIMARY KEY, prediction VARCHAR, truth VARCHAR, "
            "other VARCHAR, model_id VARCHAR)"
        )
        con.executemany(
            "INSERT INTO animals VALUES (?, ?, ?, ?, ?)",
            [[f"a{i}", PREDICTION[i], TRUTH[i], OTHER[i], MODEL_IDS[i]] for i in range(len(TRUTH))],
        )
        con.execute("CREATE TABLE animals_v2 (key VARCHAR PRIMARY KEY, prediction VARCHAR, model_id VARCHAR)")
        con.executemany(
            "INSERT INTO animals_v2 VALUES (?, ?, 'animals/3')",
            [[f"a{i}", OTHER[i]] for i in range(len(OTHER))],
        )
        con.execute("CREATE TABLE animals_errors (key VARCHAR, error VARCHAR)")
        con.execute("INSERT INTO animals_errors VALUES ('x1', 'bad'), ('x2', 'bad')")
        con.execute("CREATE TABLE keyless (id INTEGER, prediction VARCHAR)")

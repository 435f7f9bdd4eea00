"""The built-in LM's corpus: short, simple English stories from a small grammar.

The text is generated here, from the word lists and templates in this file,
so it is the project's own (Apache-2.0, like trilut); nothing is downloaded.
``stories(n, seed)`` is deterministic for a seed (Python's ``random.Random``,
whose integer seeding, ``random()``, ``choice`` and ``randrange`` are stable
across Python 3 versions; ``tests/test_lm_model.py`` pins a hash).

The grammar is small but makes a model learn syntax and agreement to write
readable text: he/she/they with his/her/their, is/are and was/were, third-person
-s in the present tense, a/an, plurals, quotation marks around dialogue,
names kept consistent through a story, and a beginning, a problem and an end.
Training uses seed ``TRAIN_SEED``; the held-out split for perplexity uses
``HELDOUT_SEED`` (a different stream of stories from the same grammar).
"""

import random

TRAIN_SEED = 0
HELDOUT_SEED = 1

NAMES = {"he": ("Tom", "Ben", "Sam", "Max", "Leo", "Jack", "Finn", "Owen", "Tim", "Dan"),
         "she": ("Lily", "Mia", "Anna", "Emma", "Zoe", "Lucy", "Rosa", "Nora", "Amy", "Ella")}
POSSESSIVE = {"he": "his", "she": "her", "they": "their"}
OBJECT_PRONOUN = {"he": "him", "she": "her", "they": "them"}
KINDS = {"he": ("boy", "bunny", "fox", "bear", "puppy", "duck"),
         "she": ("girl", "bunny", "cat", "mouse", "bird", "owl")}
TRAITS = ("little", "kind", "happy", "shy", "brave", "curious", "funny", "quiet", "clever", "busy")
PLACES = ("a small house", "a big forest", "a quiet village", "a farm", "a town by the sea",
          "a green valley", "an old castle", "a tall tree")
# (singular, plural, color allowed)
THINGS = (("ball", "balls", True), ("kite", "kites", True), ("hat", "hats", True),
          ("box", "boxes", True), ("book", "books", True), ("apple", "apples", True),
          ("boat", "boats", True), ("cup", "cups", True), ("toy car", "toy cars", True),
          ("drum", "drums", True), ("shell", "shells", True), ("key", "keys", False))
COLORS = ("red", "blue", "green", "yellow", "orange", "pink", "white", "brown", "purple", "black")
OUTINGS = ("park", "beach", "garden", "river", "hill", "market", "lake", "forest", "school", "zoo")
RELATIONS = ("mom", "dad", "friend", "sister", "brother", "grandma", "grandpa", "dog")
# (where the thing went, what got it back)
LOSSES = (("fell into the water", "used a long stick to pull it out"),
          ("got stuck in a tree", "climbed up and got it down"),
          ("rolled under a big rock", "pushed the rock away"),
          ("was lost in the tall grass", "looked and looked until they found it"),
          ("blew away in the wind", "ran after it and caught it"),
          ("fell into a deep hole", "used a rope to get it out"))
FEELINGS_BAD = ("sad", "scared", "worried", "upset")
FEELINGS_GOOD = ("happy", "glad", "proud", "thankful")
# Present tense facts: (singular subject, plural subject, verb stem, rest)
ANIMALS = (("cat", "cats"), ("dog", "dogs"), ("bird", "birds"), ("fish", "fish"),
           ("frog", "frogs"), ("bee", "bees"), ("cow", "cows"), ("duck", "ducks"))
ACTIONS = (("like", "to play"), ("eat", "in the morning"), ("sleep", "under the tree"),
           ("run", "very fast"), ("sing", "in the sun"), ("swim", "in the pond"),
           ("jump", "over the fence"), ("look", "at the sky"))
HABITS = ("shared {p} toys", "helped {p} friends", "said thank you", "was careful near the water",
          "kept {p} things in a safe place", "listened to {p} {rel}")
NUMBERS = ("two", "three", "four", "five", "many")


def _article(word):
    return "an" if word[0] in "aeiou" else "a"


def _verb_s(stem):
    """Third person singular of a regular present-tense verb."""
    if stem.endswith(("s", "sh", "ch", "x")):
        return stem + "es"
    return stem + "s"


def _cap(sentence):
    return sentence[0].upper() + sentence[1:]


def _fact(rng):
    """One present-tense sentence about animals, singular or plural (verb agreement)."""
    singular, plural = rng.choice(ANIMALS)
    verb, rest = rng.choice(ACTIONS)
    if rng.random() < 0.5:
        subject = rng.choice((f"the {singular}", f"{_article(singular)} {singular}", f"my {singular}"))
        return _cap(f"{subject} {_verb_s(verb)} {rest}.")
    subject = rng.choice((f"the {plural}", f"{rng.choice(NUMBERS)} {plural}", f"my {plural}"))
    return _cap(f"{subject} {verb} {rest}.")


def story(rng):
    """One story: a character, a thing, an outing, a problem, help, an ending."""
    pron = rng.choice(("he", "she"))
    name = rng.choice(NAMES[pron])
    friend_pron = rng.choice(("he", "she"))
    friend = rng.choice([n for n in NAMES[friend_pron] if n != name])
    pos, obj = POSSESSIVE[pron], OBJECT_PRONOUN[pron]
    kind, trait = rng.choice(KINDS[pron]), rng.choice(TRAITS)
    thing, things, colored = rng.choice(THINGS)
    color = rng.choice(COLORS) if colored and rng.random() < 0.7 else None
    item = f"{color} {thing}" if color else thing
    outing, rel = rng.choice(OUTINGS), rng.choice(RELATIONS)
    lost, fix = rng.choice(LOSSES)
    bad, good = rng.choice(FEELINGS_BAD), rng.choice(FEELINGS_GOOD)
    plural_start = rng.random() < 0.25

    s = []
    s.append(rng.choice((f"Once upon a time, there was {_article(trait)} {trait} {kind} named {name}.",
                         f"{name} was {_article(trait)} {trait} {kind} who lived in {rng.choice(PLACES)}.",
                         f"There once was {_article(trait)} {trait} {kind}. {_cap(pos)} name was {name}.")))
    if plural_start:
        n = rng.choice(NUMBERS[:-1])
        favorite = f"The {color} one" if color else "One of them"
        s.append(f"{_cap(pron)} had {n} {things}. {favorite} was {pos} favorite.")
    else:
        s.append(rng.choice((f"{_cap(pron)} had {_article(item)} {item}.",
                             f"{_cap(pron)} loved {pos} {item} very much.",
                             f"{_cap(pos)} {rel} gave {obj} {_article(item)} {item}.")))
    if rng.random() < 0.4:
        s.append(_fact(rng))
    s.append(rng.choice((f"One day, {name} went to the {outing} with {pos} {rel}.",
                         f"One sunny day, {name} took the {thing} to the {outing}.",
                         f"In the morning, {name} and {pos} {rel} walked to the {outing}.")))
    s.append(f"The {thing} {lost}.")
    s.append(rng.choice((f"{name} was very {bad}.", f"{name} felt {bad} and began to cry.",
                         f"\"Oh no, my {thing}!\" said {name}.")))
    fpos = POSSESSIVE[friend_pron]
    s.append(rng.choice((f"Then {friend} came by. \"Do not be {bad}, {name}. I will help you,\" "
                         f"said {friend}.",
                         f"{name} saw {pos} friend {friend}. \"Can you help me?\" asked {name}. "
                         f"\"Yes, I can,\" said {friend}.",
                         f"{friend} heard {obj} and ran over with {fpos} {rng.choice(RELATIONS)}.")))
    s.append(f"Together, they {fix}.")
    if rng.random() < 0.5:
        s.append(rng.choice((f"{name} was {good}, and {friend} was {good} too.",
                             f"They were very {good}.",
                             f"\"Thank you, {friend}!\" said {name}. They both smiled.")))
    else:
        s.append(f"{name} hugged {friend} and said thank you. {_cap(friend_pron)} was {good}.")
    habit = rng.choice(HABITS).format(p=pos, rel=rel)
    s.append(rng.choice((f"From that day on, {name} always {habit}.",
                         f"After that, {name} and {friend} played together every day.",
                         "The end.")))
    return " ".join(s)


def stories(n, seed):
    """``n`` stories as a list of str (ASCII), deterministic for ``seed``."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    rng = random.Random(seed)
    return [story(rng) for _ in range(n)]

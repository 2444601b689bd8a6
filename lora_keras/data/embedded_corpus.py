"""A corpus written for this package, so the main job trains on real English with no network.

It is generated, not stored: six families of short documents (a mishap story, a weather report, a
recipe, a match report, nature notes, a letter), each an opening line, an ordered pool of body
sentences of which a seeded subset is kept, and a closing line, with slots filled from small word
lists. The families repeat their phrasing, so a small model's loss falls within a few hundred
steps; the slots and the sentence subsets make every document different. All the text here was
written for this project.

`embedded_corpus()` is the 600 documents everything here trains on by default. With arguments it
gives one family or several (`families=("recipe",)`) and more documents of each (`per_family`):
the documents are drawn in one stream whatever is asked, so a family's first 100 documents are
always the ones `embedded_corpus()` holds.
"""

import numbers
import random

NUM_DOCUMENTS = 600
# The names of `_FAMILIES`, in their order: document i of the stream belongs to family i % 6.
FAMILIES = ("mishap", "weather", "recipe", "match", "nature", "letter")

_NAMES = [
    "Maya", "Tomas", "Priya", "Olu", "Hana", "Felix", "Ines", "Kwame", "Lena", "Ravi",
    "Sofia", "Jonah", "Amara", "Theo", "Yuki", "Nadia", "Omar", "Clara", "Bruno", "Esther",
]  # fmt: skip
_TOWNS = [
    "Alderbrook", "Fenwick", "Millhaven", "Stonebridge", "Larkfield", "Ashcombe", "Redwater",
    "Pinecrest", "Eastmere", "Hollowell", "Briarton", "Kestrel Bay",
]  # fmt: skip
_CITIES = ["Velmora", "Port Amsel", "Oristad", "Castell Rhun", "Sarenne", "Lindqvist Harbour"]
_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip
_ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"]
_SKIES = [
    "a grey and heavy sky", "clear blue skies", "thick morning fog", "a light, steady drizzle",
    "bright sunshine and a cool breeze", "low clouds and scattered showers",
    "a thin layer of frost", "patches of sun between fast clouds",
]  # fmt: skip
_DIRECTIONS = ["north", "south", "east", "west", "north-west", "south-east"]
_RIVERS = ["higher than usual after the rain", "low and calm", "running fast and brown"]
_OUTLOOKS = ["brighter", "much the same", "a little colder", "wetter", "warmer"]
_WHENS = ["last week", "this morning", "over the weekend", "two days ago", "yesterday evening"]
_PLACES = [
    "the community kitchen", "my brother's workshop", "the school library", "our allotment",
    "the bike shop where I work", "my aunt's bakery", "the village hall",
]  # fmt: skip
_TASKS = [
    "fix a squeaky door", "repaint an old chair", "move a heavy bookshelf",
    "set up a new printer", "water the seedlings", "sort a box of old letters",
    "hang a row of paper lanterns", "clean the big front window",
]  # fmt: skip
_MISTAKES = [
    "knocked over a tin of blue paint", "left the tap running", "locked the keys inside",
    "mixed up the labels on two jars", "sent the message to the wrong person",
    "sat on the only pair of glasses in the room", "unplugged the freezer instead of the lamp",
]  # fmt: skip
_DISHES = [
    "lentil soup", "vegetable curry", "spiced chickpea stew", "leek and potato soup",
    "egg fried rice", "mushroom risotto", "bean chili", "pumpkin soup", "sweetcorn fritters",
]  # fmt: skip
_VEGETABLES = ["carrots", "onions", "potatoes", "peppers", "courgettes", "leeks", "mushrooms"]
_INGREDIENTS = [
    "two onions", "a clove of garlic", "a tin of tomatoes", "a handful of spinach",
    "a spoon of cumin", "a cup of rice", "some fresh parsley", "a knob of butter", "a lemon",
]  # fmt: skip
_SPORTS = ["football", "hockey", "handball"]
_MASCOTS = ["Rovers", "Falcons", "Otters", "United", "Harriers", "Comets", "Badgers", "Pilots"]
_ANIMALS = {
    "fox": "mice, beetles and fallen fruit",
    "heron": "small fish and frogs",
    "hedgehog": "beetles, worms and slugs",
    "otter": "fish and crayfish",
    "red squirrel": "seeds, nuts and pine cones",
    "barn owl": "voles and mice",
    "badger": "earthworms and roots",
    "kingfisher": "small fish",
    "roe deer": "leaves, buds and grass",
    "swift": "insects caught in flight",
}
_HABITATS = [
    "the reed beds by the river", "the old beech wood", "the edge of the wheat field",
    "the garden pond", "the hedgerow behind the school", "the marsh near the old mill",
]  # fmt: skip
_TIMES = ["just after dawn", "in the late afternoon", "at dusk", "around midday"]
_LIGHTS = ["soft and golden", "flat and grey", "bright but cold", "fading quickly"]
_VIEWS = ["the harbour and its boats", "a row of red roofs", "a small square with a fountain"]
_LANDMARKS = ["lighthouse", "covered market", "old cathedral", "botanical garden", "city museum"]
_ITEMS = ["warm scarf", "cheap umbrella", "straw hat", "pair of thick socks"]
_WEATHER_WORDS = ["rainy", "very hot", "windy", "cold and bright"]

# Each family: (openings, body sentences in reading order, closings).
_FAMILIES = [
    (
        [
            "This happened {when} and I am still a little embarrassed about it.",
            "So this happened to me {when}, and I think it is a lesson worth sharing.",
            "I made a silly mistake {when} at {place}, and here is how it went.",
        ],
        [
            "I had offered to {task} at {place}, which should have been easy.",
            "{friend} had shown me how to do it once, but that was a long time ago.",
            "I did not read the instructions, because I was sure I remembered them.",
            "Everything went well for the first {minutes} minutes.",
            "Then, without thinking, I {mistake}.",
            "I did not notice until {friend} walked in and gave me a very long look.",
            "For a moment I just stood there and stared at the mess.",
            "We spent the next hour cleaning up and trying not to laugh.",
            "The worst part was that I had told everyone how careful I was.",
            "In the end nothing was badly damaged, apart from my pride.",
        ],
        [
            "Next time I will read the instructions twice.",
            "Lesson learned: slow down, and check before you start.",
            "{friend} still brings it up whenever we meet.",
        ],
    ),
    (
        [
            "Weather report for {town}, {weekday} the {day} of {month}.",
            "Here is the weather for {town} and the nearby villages on {weekday}.",
        ],
        [
            "The day begins with {sky}, and the temperature is close to {temp} degrees.",
            "By midday the wind turns {direction} and picks up to about {wind} kilometres an hour.",
            "Farmers in the valley should expect {sky2} in the afternoon.",
            "The river near {town} is {river}, so the path by the mill may be muddy.",
            "Anyone walking to school should wear a warm coat and carry an umbrella.",
            "Tonight the temperature will fall to around {low} degrees.",
            "There is a small chance of thunder late in the evening, mostly over the hills.",
            "Tomorrow looks {outlook}, with {sky2} for most of the day.",
        ],
        [
            "That is all for today. Stay safe and enjoy your {weekday}.",
            "The next report for {town} will follow tomorrow morning.",
        ],
    ),
    (
        [
            "How to make {dish} for {servings} people.",
            "A simple recipe for {dish}, the way {name} makes it at home.",
        ],
        [
            "You will need {ingredients}, some {vegetable} and a pinch of salt.",
            "Start by washing your hands and clearing a space on the table.",
            "Chop the {vegetable} into small pieces and set them aside in a bowl.",
            "Warm a little oil in a large pan over a medium heat.",
            "Add the {vegetable} and stir gently for about {minutes} minutes.",
            "Pour in two cups of water, cover the pan, and let it cook slowly.",
            "Taste it now and then, and add more salt if it needs it.",
            "While it cooks, wash the knife and the board so the kitchen stays tidy.",
            "When it is ready, leave it to rest for {rest} minutes before serving.",
        ],
        [
            "Serve it warm with fresh bread. It keeps for {days} days in the fridge.",
            "{name} says it tastes even better the next day.",
        ],
    ),
    (
        [
            "Match report: {team_a} against {team_b}, {sport}, {weekday} afternoon.",
            "The {sport} season went on this {weekday} when {team_a} hosted {team_b}.",
        ],
        [
            "About {crowd} people came to watch, despite {sky}.",
            "{team_a} started quickly and scored after only {minute} minutes.",
            "{team_b} answered before half time with a fine shot from {friend}.",
            "The second half was slower, and both teams looked tired.",
            "The coach of {team_b} made two changes, and it almost worked.",
            "Late in the game, {name} found space on the left and scored.",
            "The final score was {score_a} to {score_b}.",
        ],
        [
            "The two teams meet again in {month}.",
            "{team_a} now sit {position} in the league table.",
        ],
    ),
    (
        [
            "Field notes, {month}. I spent the morning near {habitat}.",
            "Nature diary: a walk to {habitat} {time}.",
        ],
        [
            "The first thing I saw was a {animal}, which stopped and watched me for a moment.",
            "A {animal} feeds mostly on {food}, so this is a good place for it.",
            "I sat very still on a fallen log and waited.",
            "After about {minutes} minutes, a second {animal} appeared, a little smaller.",
            "The light was {light}, and the air smelled of wet leaves.",
            "I counted {count} different kinds of bird before I went home.",
            "{name} from the nature club told me about this spot last week.",
            "I made a quick sketch in my notebook and wrote down the time.",
        ],
        [
            "I will come back next {month} to see if the {animal} is still here.",
            "A good walk, and a quiet one.",
        ],
    ),
    (
        [
            "Dear {friend}, I hope you are well. I am writing from {city}.",
            "Dear {friend}, greetings from {city}, where I arrived {when}.",
        ],
        [
            "The train from {town} took {hours} hours, and I read most of a book on the way.",
            "My room is small but clean, and from the window I can see {view}.",
            "Yesterday I walked to the {landmark} and then got a little lost in the old streets.",
            "The food here is wonderful; I have eaten {dish} three times already.",
            "People are kind and patient with my poor attempts at the language.",
            "I miss our long talks on {weekday} evenings.",
            "It has been {weather} all week, so I bought a {item} at the market.",
            "I will be home at the end of {month}, and I will bring you something small.",
        ],
        [
            "Write back soon. With love, {name}.",
            "Take care of yourself. Your friend, {name}.",
        ],
    ),
]


def _slots(rng):
    """One value for every slot, drawn once a document so its sentences agree."""
    name, friend = rng.sample(_NAMES, 2)
    town_a, town_b = rng.sample(_TOWNS, 2)
    animal = rng.choice(sorted(_ANIMALS))
    temp = rng.randint(-3, 28)
    return {
        "name": name,
        "friend": friend,
        "town": town_a,
        "city": rng.choice(_CITIES),
        "weekday": rng.choice(_WEEKDAYS),
        "month": rng.choice(_MONTHS),
        "day": rng.choice(_ORDINALS),
        "when": rng.choice(_WHENS),
        "place": rng.choice(_PLACES),
        "task": rng.choice(_TASKS),
        "mistake": rng.choice(_MISTAKES),
        "minutes": rng.randint(3, 40),
        "sky": rng.choice(_SKIES),
        "sky2": rng.choice(_SKIES),
        "temp": temp,
        "low": temp - rng.randint(3, 9),
        "direction": rng.choice(_DIRECTIONS),
        "wind": rng.randint(5, 60),
        "river": rng.choice(_RIVERS),
        "outlook": rng.choice(_OUTLOOKS),
        "dish": rng.choice(_DISHES),
        "servings": rng.randint(2, 8),
        "ingredients": ", ".join(rng.sample(_INGREDIENTS, 3)),
        "vegetable": rng.choice(_VEGETABLES),
        "rest": rng.randint(2, 10),
        "days": rng.randint(2, 4),
        "sport": rng.choice(_SPORTS),
        "team_a": f"{town_a} {rng.choice(_MASCOTS)}",
        "team_b": f"{town_b} {rng.choice(_MASCOTS)}",
        "crowd": 50 * rng.randint(2, 40),
        "minute": rng.randint(2, 30),
        "score_a": rng.randint(1, 5),
        "score_b": rng.randint(1, 5),
        "position": rng.choice(_ORDINALS),
        "habitat": rng.choice(_HABITATS),
        "time": rng.choice(_TIMES),
        "animal": animal,
        "food": _ANIMALS[animal],
        "light": rng.choice(_LIGHTS),
        "count": rng.randint(4, 19),
        "hours": rng.randint(2, 9),
        "view": rng.choice(_VIEWS),
        "landmark": rng.choice(_LANDMARKS),
        "item": rng.choice(_ITEMS),
        "weather": rng.choice(_WEATHER_WORDS),
    }


def _document(rng, family):
    openings, body, closings = family
    # Keep most of the body, in reading order, so documents vary but still read as a story.
    kept = sorted(rng.sample(range(len(body)), rng.randint(len(body) - 3, len(body))))
    sentences = [rng.choice(openings), *(body[i] for i in kept), rng.choice(closings)]
    return " ".join(sentences).format_map(_slots(rng))


def _check_families(families):
    if isinstance(families, str):
        families = (families,)
    families = tuple(families)
    if not families:
        raise ValueError(
            f"families is empty: name at least one of {', '.join(FAMILIES)}, or pass None for all."
        )
    for family in families:
        if family not in FAMILIES:
            raise ValueError(
                f"Unknown family {family!r}. The embedded corpus has the families "
                f"{', '.join(FAMILIES)}."
            )
    return families


def embedded_corpus(seed=0, families=None, per_family=None):
    """The package's own English corpus: `NUM_DOCUMENTS` distinct documents, over 200 KB.

    The same `seed` gives the same documents in the same order, on any machine: everything is
    drawn from one `random.Random(seed)`. The families take turns, so any prefix is balanced.

    Args:
        seed: int. Picks the slot values and sentence subsets.
        families: `None` for all six, or a family name or a sequence of them, from `FAMILIES`
            ("mishap", "weather", "recipe", "match", "nature", "letter"): only their documents,
            in the stream's order.
        per_family: int. Documents drawn of each family; `None` means 100, so that
            `embedded_corpus()` is `NUM_DOCUMENTS` documents. More documents extend the same
            stream: the first 100 of each family do not change.

    Example:
    ```python
    texts = lk.embedded_corpus()
    print(len(texts), texts[0][:60])
    recipes = lk.embedded_corpus(families="recipe", per_family=400)  # 400 recipes
    ```
    """
    wanted = FAMILIES if families is None else _check_families(families)
    if per_family is None:
        per_family = NUM_DOCUMENTS // len(_FAMILIES)
    if isinstance(per_family, bool) or not isinstance(per_family, numbers.Integral):
        raise ValueError(f"per_family must be an integer, got {per_family!r}.")
    if per_family < 1:
        raise ValueError(f"per_family must be at least 1 document, got {per_family}.")
    rng = random.Random(seed)
    documents, seen = [], set()
    while len(documents) < per_family * len(_FAMILIES):
        document = _document(rng, _FAMILIES[len(documents) % len(_FAMILIES)])
        # Slots make a repeat very unlikely; drawing again keeps the documents distinct anyway.
        if document not in seen:
            seen.add(document)
            documents.append(document)
    keep = {FAMILIES.index(family) for family in wanted}
    return [document for i, document in enumerate(documents) if i % len(FAMILIES) in keep]

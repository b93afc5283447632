"""Deterministic generator for data/prompts/sparkops-prompts-v1.jsonl (run once; output committed)."""
import json
import pathlib
import random

rng = random.Random(20250101)
topics = ["photosynthesis","the water cycle","plate tectonics","vaccines","black holes","compound interest",
 "the French Revolution","the printing press","public-key cryptography","TCP congestion control","garbage collection",
 "supply and demand","the immune system","climate feedback loops","the Roman aqueducts","quantum entanglement",
 "sourdough fermentation","electric motors","the Silk Road","neural networks","GPS satellites","tides",
 "inflation","coral reefs","the Apollo program","blockchain ledgers","antibiotic resistance","jet engines",
 "the Renaissance","solar panels","DNA replication","hash tables","the stock market","volcanoes",
 "the human heart","lithium-ion batteries","the Industrial Revolution","bird migration","RAID storage",
 "the Doppler effect","monsoons","container shipping","the Byzantine Empire","CRISPR","nuclear fission",
 "recommendation systems","the Krebs cycle","suspension bridges","the placebo effect","operating system schedulers"]
short_t = ["What is {t}? Answer in two sentences.","Give three surprising facts about {t}.",
 "In one paragraph, why does {t} matter?","Name the key terms someone should know about {t}.",
 "What is a common misconception about {t}?"]
explain_t = ["Explain how {t} works to a curious high-school student, with one concrete example.",
 "Write a short study guide on {t}: key ideas, a worked example, and two review questions.",
 "Compare {t} with {u}: what do they have in common, and how do they differ?",
 "Describe the history of {t} in a few paragraphs, from its origins to today.",
 "What are the main open questions or debates about {t}? Summarize each side."]
creative_t = ["Write a short story in which {t} plays a central role. Give it a title.",
 "Write a poem of about twenty lines inspired by {t}.",
 "Write a dialogue between a skeptic and an enthusiast about {t}.",
 "Write the opening chapter of a mystery novel set around {t}.",
 "Write a persuasive speech arguing that schools should teach more about {t}."]
code_tasks = ["a function that checks whether a string is a palindrome, ignoring punctuation",
 "a least-recently-used cache with get and put in O(1)","a parser for simple arithmetic expressions with + - * / and parentheses",
 "a function that merges overlapping intervals","a command-line tool that counts word frequencies in a text file",
 "a binary search over a sorted list that returns the insertion point","a rate limiter using the token bucket algorithm",
 "a function that validates an IPv4 address","a breadth-first search that finds the shortest path in a grid with walls",
 "a thread-safe counter","a function that converts Roman numerals to integers","a simple JSON pretty-printer without libraries",
 "an iterator that flattens arbitrarily nested lists","a function computing the edit distance between two strings",
 "a priority queue backed by a binary heap","a function that detects a cycle in a linked list",
 "a CSV reader that handles quoted fields","a topological sort of a dependency graph",
 "a function that returns the k most frequent elements","a matrix multiplication routine with a unit test"]
langs = ["Python","Rust","Go","TypeScript","C++"]
facts = ["Researchers recorded measurements every hour for six months.","The committee met twice to review the budget.",
 "Costs rose by twelve percent over the previous year.","Several participants reported problems with the new schedule.",
 "The pilot program was extended to three additional regions.","Early results suggested a modest improvement in reliability.",
 "A second survey found that most users preferred the older interface.","Maintenance windows were moved to weekends to reduce disruption.",
 "The supplier delivered the components two weeks late.","Staff training took longer than planned because of turnover.",
 "Energy use fell after the cooling system was replaced.","An external audit identified gaps in the documentation.",
 "The team adopted a weekly review of open incidents.","Customer complaints dropped sharply in the final quarter.",
 "Two prototypes failed the stress test and were redesigned.","The new policy required approval for purchases above a threshold.",
 "Data from the sensors was archived to a central store.","The project lead recommended a phased rollout.",
 "Traffic peaked on Monday mornings and Friday afternoons.","A backup site was brought online for disaster recovery."]
rows = []
def add(cat, text, mt): rows.append({"category": cat, "prompt": text, "max_tokens": mt})
for i, t in enumerate(topics):
    add("short", short_t[i % 5].format(t=t), 128)
for i, t in enumerate(topics):
    add("explain", explain_t[i % 5].format(t=t, u=topics[(i * 7 + 3) % len(topics)]), 256)
for i, t in enumerate(topics[:30]):
    add("creative", creative_t[i % 5].format(t=t), 512)
for i, task in enumerate(code_tasks):
    add("code", f"Write {task} in {langs[i % 5]}. Include brief comments explaining the approach.", 384)
for i in range(50):
    n = 6 + (i * 37) % 90  # 6..95 sentences: roughly 60 to 1100 words of context
    sents = [rng.choice(facts) for _ in range(n)]
    title = topics[(i * 11) % len(topics)]
    report = " ".join(sents)
    q = ["Summarize the report above in five bullet points.", "List the three most important problems mentioned in the report and suggest a fix for each.",
         "Write a one-paragraph executive summary of the report.", "Which facts in the report are repeated? Group them and count them."][i % 4]
    add("long_context", f"The following is an internal report about a project on {title}.\n\n{report}\n\n{q}", 256)
rng.shuffle(rows)  # mixed order: the first N prompts of the file are a fair sample
with open(pathlib.Path(__file__).with_name("sparkops-prompts-v1.jsonl"), "w") as f:
    for i, r in enumerate(rows):
        f.write(json.dumps({"id": f"v1-{i:03d}", **r}) + "\n")
print(len(rows))

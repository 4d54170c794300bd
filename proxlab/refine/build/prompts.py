"""The paper's teacher prompts, VERBATIM (arXiv 2409.17115v2 §A.1, Figs. 9-12), copied character for character from
the paper's PDF text, with its line breaks restored and the printed
‘ ’ “ ” characters (the paper's typesetting of backticks and quotes; kept as printed, not reinterpreted).

* EDU_PROMPT (Prompt 1, Fig. 9 upper; FineWeb-Edu's): ends "Educational score: <total points>".
* FORMAT_PROMPT (Prompt 2, Fig. 9 lower; new in ProX): ends "Extraction Quality Score: <total points>".
* NAVIGATION_PROMPT, URL_PROMPT, FOOTER_PROMPT (Prompts 3-5, Figs. 10-12): few-shot chunk programs, one prompt per
  noise type, in the prompts' own function names (``untouch_doc()``, ``remove_lines(start=, end=)``, ``normalize``).

Each holds the placeholder ``<EXAMPLE>`` once, where the paper puts the document; ``fill`` substitutes it. The texts
are raw triple-single-quoted strings (the few-shot stubs hold triple double quotes). Standard library only.
"""

from __future__ import annotations

PLACEHOLDER = "<EXAMPLE>"

EDU_PROMPT = r'''Below is an extract from a web page. Evaluate whether the page has a high educational value and could be useful in an educational setting for teaching from primary school to grade school levels using the additive 5-point scoring system described below. Points are accumulated based on the satisfaction of each criterion:
- Add 1 point if the extract provides some basic information relevant to educational topics, even if it includes some irrelevant or non-academic content like advertisements and promotional material.
- Add another point if the extract addresses certain elements pertinent to education but does not align closely with educational standards. It might mix educational content with non-educational material, offering a superficial overview of potentially useful topics, or presenting information in a disorganized manner and incoherent writing style.
- Award a third point if the extract is appropriate for educational use and introduces key concepts relevant to school curricula. It is coherent though it may not be comprehensive or could include some extraneous information. It may resemble an introductory section of a textbook or a basic tutorial that is suitable for learning but has notable limitations like treating concepts that are too complex for grade school students.
- Grant a fourth point if the extract highly relevant and beneficial for educational purposes for a level not higher than grade school, exhibiting a clear and consistent writing style. It could be similar to a chapter from a textbook or a tutorial, offering substantial educational content, including exercises and solutions, with minimal irrelevant information, and the concepts aren’t too advanced for grade school students. The content is coherent, focused, and valuable for structured learning.
- Bestow a fifth point if the extract is outstanding in its educational value, perfectly suited for teaching either at primary school or grade school. It follows detailed reasoning, the writing style is easy to follow and offers profound and thorough insights into the subject matter, devoid of any non-educational or complex content.
The extract: <EXAMPLE>.
After examining the extract:
- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: “Educational score: <total points>”'''

FORMAT_PROMPT = r'''Evaluate the provided web content extraction sample. Points are accumulated based on the satisfaction of each criterion:
0. Start with 0 points.
1. Add 1 point if the extract contains some readable content, even if it includes a significant amount of HTML tags, navigation elements, or other web page artifacts. The main content should be identifiable, albeit mixed with noise.
2. Add another point if the extract shows signs of basic cleaning. Most obvious HTML tags have been removed, though some may remain. The text structure begins to emerge, but non-content elements (e.g., footer links, button text) may still be present. The writing style may be disjointed due to remnants of page structure.
3. Award a third point if the extract is largely cleaned of HTML and most non-content elements. The main body of the content is intact and coherent. Some extraneous information (e.g., isolated URLs, timestamps, image alt text) may persist, but doesn’t significantly impede readability. The extract resembles a rough draft of the original content.
4. Grant a fourth point if the extract is highly refined, with clear paragraph structure and formatting. Almost all HTML tags and non-content elements have been eliminated. Minimal noise remains. The content flows well and reads like a near-final draft, with consistent formatting and style.
5. Bestow a fifth point if the extraction is flawless. The content is entirely clean, preserving the original structure (paragraphs, headings, lists) without any HTML tags or web page elements. No extraneous information is present. The extract reads as if it were a professionally edited document, perfectly capturing the original content.
The extract: <EXAMPLE>.
After examining the extract:
- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: "Extraction Quality Score: <total points>"'''

NAVIGATION_PROMPT = r'''You’re tasked with generating Python programs to clean web text strings by removing navigation bars. The web text will be presented with line numbers starting from ‘[000]‘. Your task is to use the following pre-defined functions to clean the text:
‘‘‘python
def untouch_doc():
    """leave the clean doc untouched, for tagging clean and high quality doc."""
def remove_lines(start: int, end: int):
    """remove noisy lines from ‘start‘ until ‘end‘, including ‘end‘."""
‘‘‘
Your goal is to identify navigation bars or menu items at the beginning of the text and remove them using the ‘remove_lines()‘ function. If the text doesn’t contain a navigation bar or menu items, use the ‘untouch_doc()‘ function to indicate that no cleaning is necessary. If the line contains other text other than navigation, also call ‘untouch_doc‘ to escape overkilling. Here are some examples to guide you:
Example 1:
[doc]
[000] Home | Products | About Us | Contact
[001] Welcome to our website
[002] Here’s our main content...
[/doc]
Program:
‘‘‘python
remove_lines(start=0, end=0)
‘‘‘
Example 2:
[doc]
341 US 479 Hoffman v. United States 341 US 479 Hoffman v. United States 341 U.S. 479 95 L.Ed. 1118 HOFFMANv.UNITED STATES. Mr. William A. Gray, Philadelphia, Pa., for petitioner. Mr. John F. Davis, Washington, D.C., for respondent.
......
[/doc]
Program:
‘‘‘python
untouch_doc()
‘‘‘
Example 3:
[doc]
[000]Police Search Tunbridge Wells House Over Human Remains Tip Off
[001]Posted: 16/04/2012 10:44 Updated: 16/04/2012 10:44 reddit stumble
[002]Crime, Body Buried In House, Buried Body, Buried Remains, Tip-Off, Uk News, Uk Police,
[003]Detectives are searching the gardens of a house following information that human remains may be buried there.
[/doc]
Program:
‘‘‘python
untouch_doc()
‘‘‘
Example 4:
[doc]
[000]Home > Bollywood News > Bollywood Stars clash on Indian TV Bollywood Stars clash on Indian TV
[001]By Lekha Madhavan09:47 pm Betting big on the festive season, general entertainment channels (GECs) are launching celebrity-driven shows, but media buyers are concerned about the audience split that is set to happen.
[002]The fourth season of Bigg Boss on Colors is almost certain to clash with the fourth season of Kaun Banega Crorepati (KBC) on Sony Entertainment Television (SET) in the second week of October.
[003]Another big property, Master Chef, to be hosted by Akshay Kumar, on STAR Plus, is also expected to go on air in October. However, the channel is yet to disclose the launch date.
[004]Big-budget shows like these are often loss-making propositions for channels, as the operating cost is very high and advertisement revenues do not suffice to cover the cost.
[005]Source: IBNS
[/doc]
Program:
‘‘‘python
untouch_doc()
‘‘‘
For each given web text, analyze the content and determine if there’s a navigation bar or menu items at the beginning. If present, use ‘remove_lines()‘ or ‘normalize()‘ to remove them. If not, use ‘untouch_doc()‘ to indicate that no cleaning is needed.
Example: <EXAMPLE>.
After examining the web text:
- Briefly describe if the web extract contains navigation bar at the begining (10 lines).
- You must not mistakenly decide that title of the page is navigation bar and remove it.
- When the whole line is navigation bar, call ‘remove_lines‘; if the line contains other information, call ‘normalize‘ to remove part of it.
- Give your program using the same format: ‘‘‘python[your code]‘‘‘'''

URL_PROMPT = r'''You’re tasked with generating Python programs to clean web text strings by removing http lines. The web text will be presented with line numbers starting from ‘[000]‘. Your task is to use the following pre-defined functions to clean the text:
‘‘‘python
def untouch_doc():
    """leave the clean doc untouched, for tagging clean and high quality doc."""
def remove_lines(start: int, end: int):
    """remove noisy lines from ‘start‘ until ‘end‘, including ‘end‘."""
def normalize(source_str: str, target_str: str=""):
    """turn noisy strings into normalized strings."""
‘‘‘
Your goal is to identify http links from the text and remove them using the ‘remove_lines()‘ or ‘normalize()‘ function. If the text doesn’t contain http lines, use the ‘untouch_doc()‘ function to indicate that no cleaning is necessary. Here are some examples to guide you:
Example 1:
[doc]
[013] http://groups.google.com/group/toowoombalinuxLast
[014] Breaking News: Major Event Unfolds
[015] http://code.google.com/p/inxi/
[/doc]
Program:
‘‘‘python
# the whole line-[013] is http, so remove the line-[013]
remove_lines(start=13, end=13)
# the whole line-[015] is http, so remove the line-[015]
remove_lines(start=15, end=15)
‘‘‘
Example 2:
[doc]
[000] The Impact of Climate Change on Global Ecosystems
[001] By Dr. Jane Smith
[002] Climate change continues to be a pressing issue...
[/doc]
Program:
‘‘‘python
untouch_doc()
‘‘‘
Example 3:
[doc]
[021]Bow-wow
[022]http://groups.google.com/group/toowoombalinuxLast edited by Puppyt on Mon 06 Jun 2011, 00:23; edited 1 time in total
[023]I would like to see something like Jitsi
[024]http://www.jitsi.org/. Plus some others incorporated into a puppy distro.
[/doc]
Program:
‘‘‘python
# the http link in line 22 and line 24 comes with other text, so use normalize to ONLY remove the link without touching text.
normalize(source_str="http://groups.google.com/group/toowoombalinuxLast", target_str="")
normalize(source_str="http://www.jitsi.org/.", target_str="")
‘‘‘
For each given web text, analyze the content and determine if there’s a navigation bar or menu items at the beginning. If present, use ‘remove_lines()‘ or ‘normalize()‘ to remove them. If not, use ‘untouch_doc()‘ to indicate that no cleaning is needed.
Example: <EXAMPLE>.
After examining the web text:
- do not remove text together with http.
- Briefly describe if the web extract contains http links; and make sure remove them will not influence the main content.
- Program only contain sequences of function callings and comments, no other codes.
- note line number starts with 0. make accurate annotations about line number. put the exact int line number of the given line. do not add 1 or minus 1.
- Give your program using the same format: ‘‘‘python[your code]‘‘‘'''

FOOTER_PROMPT = r'''You’re tasked with generating Python programs to clean web text strings by removing footer sections, references. The web text will be presented with line numbers starting from ‘[000]‘. Your task is to use the following pre-defined functions to clean the text:
‘‘‘python
def untouch_doc():
    """leave the clean doc untouched, for tagging clean and high quality doc."""
def remove_lines(start: int, end: int):
    """remove noisy lines from ‘start‘ until ‘end‘, including ‘end‘."""
def normalize(source_str: str, target_str: str=""):
    """turn noisy strings into normalized strings."""
‘‘‘
Your goal is to identify footer sections from the text and remove them using the ‘remove_lines()‘ function. Footers and references typically appear at the end of the text and may contain information such as copyright notices, contact details, or navigation links. If the text doesn’t contain a footer section or any references, use the ‘untouch_doc()‘ function to indicate that no cleaning is necessary. Here are some examples to guide you:
Example 1:
[doc]
[013] In conclusion, the study demonstrates significant findings.
[014] © 2023 Research Institute. All rights reserved.
[015] Contact: info@research-institute.com
[016] Follow us on social media: @ResearchInst
[/doc]
Program:
‘‘‘python
# Remove the footer section starting from line 14
remove_lines(start=14, end=16)
‘‘‘
Example 2:
[doc]
[000] The Impact of Climate Change on Global Ecosystems
[001] By Dr. Jane Smith
[002] Climate change continues to be a pressing issue...
[003] Further research is needed to fully understand its implications.
[/doc]
Program:
‘‘‘python
untouch_doc()
‘‘‘
Example 3:
[doc]
[020] Thank you for reading our newsletter.
[021] Stay informed with our latest updates!
[022] ---
[023] Unsubscribe | Privacy Policy | Terms of Service
[024] NewsletterCo, 123 Main St, Anytown, USA
[/doc]
Program:
‘‘‘python
# Remove the footer section starting from the divider
remove_lines(start=22, end=24)
‘‘‘
For each given web text, analyze the content and determine if there is a footer section or reference. If present, use ‘remove_lines()‘ to remove it. If not, use ‘untouch_doc()‘ to indicate that no cleaning is needed.
Example: <EXAMPLE>.
After examining the web text:
- Briefly describe if the web extract contains a footer section or references; ensure that removing it will not influence the main content. If not, simply call ‘untouch_doc‘.
- The program should only contain sequences of function calls and comments, no other code.
- Note that line numbers start with 0. Make accurate annotations about line numbers. Put the exact int line number of the given line. Do not add 1 or subtract 1.
- Give your program using the same format: ‘‘‘python[your code]‘‘‘'''

SCORE_PROMPTS = {"edu": EDU_PROMPT, "format": FORMAT_PROMPT}
# Noise type (the chunk file's `noise` column) -> its few-shot prompt, in the paper's order (§A.1: (1) menus and
# navigation bars, (2) buttons, html elements, links, (3) footers).
CHUNK_PROMPTS = {"navigation": NAVIGATION_PROMPT, "url": URL_PROMPT, "footer": FOOTER_PROMPT}


def fill(prompt: str, example: str) -> str:
    """The prompt with the document (doc level) or the ``[doc]…[/doc]`` chunk (chunk level) in place of ``<EXAMPLE>``."""
    head, sep, tail = prompt.partition(PLACEHOLDER)
    if not sep:
        raise ValueError(f"a teacher prompt must hold {PLACEHOLDER}")
    return head + example + tail

"""Names in scripts other than Latin: whole words in scripts with spaces, substrings in scripts without."""

from __future__ import annotations

import unicodedata

from gateway.names import NameScrubber, NameTarget

P1, P2, P3 = "[participant 1]", "[participant 2]", "[participant 3]"


def scrubber(*rosters: str, others: tuple[tuple[str, ...], ...] = ()) -> NameScrubber:
    targets = [NameTarget(f"[participant {i + 1}]", (name,)) for i, name in enumerate(rosters)]
    return NameScrubber.build(targets, others)


def out(s: NameScrubber, text: str) -> str:
    return s.scrub(text)[0]


def test_audit_examples_are_scrubbed() -> None:
    """The audit's three leaks: Cyrillic full name, Han name inside unspaced text, Greek given name."""
    s = scrubber("Ольга Петрова", "王伟", "Κώστας Παπαδόπουλος", others=(("Alice Archer",),))
    new, spans = s.scrub("Ольга Петрова refused the budget.")
    assert new == f"{P1} refused the budget."
    assert len(spans) == 1  # the full name is one span
    assert out(s, "我和王伟明天开会") == f"我和{P2}明天开会"
    assert out(s, "Κώστας disagreed.") == f"{P3} disagreed."


def test_spaced_scripts_match_any_case_and_without_accents() -> None:
    """Case folding and dropped accents: ОЛЬГА, Κωστας, ΚΩΣΤΑΣ (final sigma too)."""
    s = scrubber("Ольга Петрова", "Κώστας Παπαδόπουλος")
    assert out(s, "ОЛЬГА и петрова") == f"{P1} и {P1}"
    assert out(s, "Ο Κωστας και ο ΚΩΣΤΑΣ") == f"Ο {P2} και ο {P2}"


def test_spaced_scripts_match_whole_words_only() -> None:
    """A longer word that starts like the name is another word."""
    s = scrubber("Анна Ким", "राम शर्मा")
    assert out(s, "Аннабель пришла") == "Аннабель пришла"
    assert out(s, "राम ने रामायण पढ़ी") == f"{P2} ने रामायण पढ़ी"  # a vowel sign continues the word


def test_arabic_and_hebrew_with_or_without_vowel_marks() -> None:
    """Harakat, hamza forms of alef and Hebrew points are written or left out freely."""
    s = scrubber("أحمد", "מִיכָאֵל כֹּהֵן")
    assert out(s, "قال احمد ذلك") == f"قال {P1} ذلك"
    assert out(s, "قال أَحْمَد ذلك") == f"قال {P1} ذلك"
    assert out(s, "מיכאל אמר") == f"{P2} אמר"


def test_unspaced_scripts_match_inside_text() -> None:
    """Han, kana, Hangul and Thai names are found with particles and honorifics attached."""
    s = scrubber("田中 太郎", "김민수", "สมชาย ใจดี")
    assert out(s, "田中さんと田中太郎") == f"{P1}さんと{P1}"
    assert out(s, "김민수가 왔고 민수는 갔다") == f"{P2}가 왔고 {P2}는 갔다"
    assert out(s, "สมชายพูดว่า") == f"{P3}พูดว่า"


def test_han_given_name_and_surname_address_forms() -> None:
    """A three-character Han name gives its given name; the surname counts only with an address form."""
    s = scrubber("张小明")
    assert out(s, "小明说张先生和老张都同意") == f"{P1}说{P1}和{P1}都同意"
    assert out(s, "张开会议") == "张开会议"


def test_single_han_characters_never_match_alone() -> None:
    """'王 伟' is found as a full name only: each character alone is an ordinary word."""
    s = scrubber("王 伟")
    assert out(s, "国王很伟大") == "国王很伟大"
    assert out(s, "王伟和王 伟") == f"{P1}和{P1}"


def test_mixed_name_scrubs_both_scripts_with_one_placeholder() -> None:
    """'Wang Wei (王伟)' and 'Dmitri Петров': the Latin and the native parts are both that person."""
    s = scrubber("Wang Wei (王伟)", "Dmitri Петров")
    assert out(s, "Wang said 王伟 agreed") == f"{P1} said {P1} agreed"
    assert out(s, "Dmitri and Петров") == f"{P2} and {P2}"


def test_compatibility_forms_and_decomposed_letters_map_to_original_offsets() -> None:
    """Half-width katakana match (NFKC); a decomposed й is matched and its combining mark is covered."""
    s = scrubber("タナカ", "Андрей")
    assert out(s, "ﾀﾅｶさん") == f"{P1}さん"
    text = unicodedata.normalize("NFD", "Спроси Андрея или Андрей")
    new, spans = s.scrub(text)
    assert new == f"Спроси Андрея или {P2}"
    assert (spans[0].start, spans[0].end) == (text.rindex("Андре"), len(text))


def test_consenting_participants_are_untouched() -> None:
    """A consenting participant's name stays, also when it contains a target's name."""
    s = scrubber("王伟", others=(("李王伟",), ("Алиса Смирнова",)))
    assert out(s, "李王伟和Алиса Смирнова同意") == "李王伟和Алиса Смирнова同意"
    assert out(s, "李王伟和王伟") == f"李王伟和{P1}"


def test_labels_give_no_forms_and_latin_rosters_build_no_script_matcher() -> None:
    """'Участник 1' is a label; a roster of Latin names pays nothing for other scripts."""
    assert scrubber("Участник 1").scripts is None
    assert scrubber("Brian Nagel").scripts is None
    assert out(scrubber("Участник 1"), "участник сказал") == "участник сказал"


def test_a_shrink_and_an_expansion_elsewhere_do_not_shift_the_span() -> None:
    """Halfwidth kana with a voiced mark shrink when normalised ("ﾃﾞ" -> "デ") and an ellipsis expands
    ("…" -> "..."): equal lengths overall, different offsets in between. The whole name is replaced, and
    nothing around it."""
    scrubber = NameScrubber.build([NameTarget("[participant 2]", ("田中太郎",))], [("Alice Smith",)])
    for text in ("ﾃﾞｰﾀﾍﾞｰｽは田中太郎さんに…", "ﾃﾞｰﾀﾍﾞｰｽは田中太郎さんに…。", "…ﾃﾞ田中太郎"):
        out, _ = scrubber.scrub(text)
        assert "太郎" not in out and "田中" not in out
        assert out == text.replace("田中太郎", "[participant 2]")


def test_a_name_written_with_halfwidth_voiced_marks_is_scrubbed() -> None:
    """Halfwidth voiced marks are spacing characters that compose with the kana before them under NFKC:
    "田中ﾃﾞﾝ" is the name "田中デン", whole."""
    scrubber = NameScrubber.build([NameTarget("[participant 2]", ("田中デン",))], [("Alice Smith",)])
    for text in ("田中ﾃﾞﾝさんに…", "田中ﾃﾞﾝ", "ﾃﾞｰﾀは田中デンさんに…"):
        out, _ = scrubber.scrub(text)
        assert "[participant 2]" in out and "田中" not in out

"""The language detector on clear sentences in every study language, and fidelity's edge cases."""

from __future__ import annotations

import pytest

from whichlora.errors import WhichloraError
from whichlora.evaluate.fidelity import STUDY_LANGUAGES, UNDETERMINED, detect_language, fidelity

SAMPLES = {
    "en": "I like to read books every day. The weather is nice this morning.",
    "de": "Ich lese jeden Tag gern Bücher. Das Wetter ist heute Morgen schön.",
    "fr": "J'aime lire des livres tous les jours. Il fait beau ce matin.",
    "es": "Me gusta leer libros todos los días. Hace buen tiempo esta mañana.",
    "ru": "Я люблю читать книги каждый день. Сегодня утром хорошая погода.",
    "zh": "我喜欢每天读书。今天早上天气很好。",
    "ja": "私は毎日本を読むのが好きです。今朝は天気がいいです。",
    "ar": "أحب قراءة الكتب كل يوم. الطقس جميل هذا الصباح.",
    "hi": "मुझे हर दिन किताबें पढ़ना पसंद है। आज सुबह मौसम अच्छा है।",
    "tr": "Her gün kitap okumayı seviyorum. Bu sabah hava çok güzel.",
    "vi": "Tôi thích đọc sách mỗi ngày. Sáng nay thời tiết đẹp.",
    "sw": "Ninapenda kusoma vitabu kila siku. Hali ya hewa ni nzuri asubuhi hii.",
    "yo": "Mo fẹ́ràn láti máa ka ìwé lójoojúmọ́. Ojú ọjọ́ dára ní òwúrọ̀ yìí.",
}


def test_samples_cover_every_study_language() -> None:
    assert set(SAMPLES) == set(STUDY_LANGUAGES)


@pytest.mark.parametrize("candidates", [None, list(STUDY_LANGUAGES)], ids=["all", "study"])
def test_detects_each_language(candidates: list[str] | None) -> None:
    assert detect_language(list(SAMPLES.values()), candidates) == list(SAMPLES)


def test_english_asked_as_german_is_unfaithful() -> None:
    assert fidelity([SAMPLES["en"], SAMPLES["de"]], "de") == [False, True]


def test_empty_and_letterless_text_are_never_in_language() -> None:
    assert detect_language(["", "   ", "123 + 4 = 127!"]) == [UNDETERMINED] * 3
    assert fidelity(["", "  "], "en") == [False, False]


def test_unknown_language_codes_are_clear_errors() -> None:
    with pytest.raises(WhichloraError, match="not known"):
        fidelity([SAMPLES["en"]], "klingon")
    with pytest.raises(WhichloraError, match="not known"):
        detect_language([SAMPLES["en"]], ["en", "xx"])
    with pytest.raises(WhichloraError, match="candidates"):
        fidelity([SAMPLES["en"]], "de", candidates=["en", "fr"])

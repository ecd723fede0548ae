"""The consent page's own words, per language: English and French ship; others fall back to English.

The policy provides the purposes' descriptions and notices in its ``languages``; these are the page's
labels, buttons and messages around them. Plain words, because the people reading them did not choose
to be asked.
"""

from __future__ import annotations

from collections.abc import Mapping

TEXT: Mapping[str, Mapping[str, str]] = {
    "en": {
        "title": "Your choices about AI in this meeting",
        "for_you": "This page is only for you",
        "intro": (
            "For each use below, choose Yes or No. Nothing you say is sent to any AI service unless you "
            "choose Yes, and you can change your mind on this page at any time."
        ),
        "language": "Language",
        "notice_version": "Notice version",
        "recipients": "Sent to",
        "no_recipients": "No AI service receives this at present.",
        "current": "Your current choice",
        "state_unknown": "Not decided: nothing of yours is sent",
        "state_given": "Yes",
        "state_refused": "No",
        "state_withdrawn": "No (you withdrew)",
        "state_expired": "Expired: nothing of yours is sent",
        "since": "since",
        "yes": "Yes, I agree",
        "no": "No, I do not agree",
        "keep_hint": "Choose neither to keep your current choice.",
        "save": "Save my choices",
        "withdraw_all": "Withdraw all my consent",
        "saved": "Your choices were saved.",
        "nothing_chosen": "You did not choose Yes or No for anything, so nothing changed.",
        "nothing_changed": "These were already your choices, so nothing changed.",
        "nothing_to_withdraw": "You had not agreed to anything, so there was nothing to withdraw.",
        "uncovered": (
            "No consent policy covers this meeting at the moment, so nothing of yours is sent anywhere. "
            "You can still withdraw everything you agreed to; agreeing waits until a policy covers it again."
        ),
        "form_stale": "This form is out of date. Please make your choices again.",
        "rejected_stale_notice": "The notice changed while this page was open. Read it, then choose again.",
        "rejected_channel_not_allowed": "This meeting does not accept choices made on this page.",
        "rejected_other": "Your choice could not be recorded.",
        "receipt_heading": "Your receipt",
        "receipt_intro": (
            "Keep this receipt. It is signed by the consent gateway, so you or anyone you show it to can "
            "check that it is genuine."
        ),
        "receipt_download": "Download the receipt (JSON)",
        "history_heading": "Everything you chose in this meeting",
        "history_empty": "Nothing yet.",
        "col_when": "When",
        "col_uses": "Uses",
        "col_choice": "Choice",
        "col_receipt": "Receipt",
        "choice_given": "Agreed",
        "choice_refused": "Refused",
        "choice_withdrawn": "Withdrew",
        "choice_rejected": "Not recorded",
        "record": "Record",
        "ledger_entry": "Ledger entry",
        "signed_by": "Signed with key",
        "refused_title": "This link cannot be used",
        "refused_text": (
            "It may have expired, or it may have been copied incompletely. Ask for a new link in the "
            "meeting. Nothing was changed."
        ),
        "error_title": "Something went wrong",
        "error_text": "Nothing was changed. Please try again in a moment.",
    },
    "fr": {
        "title": "Vos choix concernant l'IA dans cette réunion",
        "for_you": "Cette page est réservée à vous seul·e",
        "intro": (
            "Pour chaque usage ci-dessous, choisissez Oui ou Non. Rien de ce que vous dites n'est envoyé à "
            "un service d'IA si vous ne choisissez pas Oui, et vous pouvez changer d'avis sur cette page "
            "à tout moment."
        ),
        "language": "Langue",
        "notice_version": "Version de l'information",
        "recipients": "Envoyé à",
        "no_recipients": "Aucun service d'IA ne le reçoit pour le moment.",
        "current": "Votre choix actuel",
        "state_unknown": "Pas encore décidé : rien de vous n'est envoyé",
        "state_given": "Oui",
        "state_refused": "Non",
        "state_withdrawn": "Non (vous avez retiré votre accord)",
        "state_expired": "Expiré : rien de vous n'est envoyé",
        "since": "depuis le",
        "yes": "Oui, j'accepte",
        "no": "Non, je n'accepte pas",
        "keep_hint": "Ne choisissez rien pour garder votre choix actuel.",
        "save": "Enregistrer mes choix",
        "withdraw_all": "Retirer tout mon accord",
        "saved": "Vos choix ont été enregistrés.",
        "nothing_chosen": "Vous n'avez choisi ni Oui ni Non, donc rien n'a changé.",
        "nothing_changed": "C'étaient déjà vos choix, donc rien n'a changé.",
        "nothing_to_withdraw": "Vous n'aviez rien accepté, il n'y avait donc rien à retirer.",
        "uncovered": (
            "Aucune politique de consentement ne couvre cette réunion pour le moment : rien de ce qui vous "
            "concerne n'est transmis. Vous pouvez toujours retirer tout votre accord ; pour donner votre "
            "accord, attendez qu'une politique la couvre de nouveau."
        ),
        "form_stale": "Ce formulaire n'est plus à jour. Veuillez refaire vos choix.",
        "rejected_stale_notice": (
            "L'information a changé pendant que cette page était ouverte. Veuillez la relire et choisir "
            "de nouveau."
        ),
        "rejected_channel_not_allowed": "Cette réunion n'accepte pas les choix faits sur cette page.",
        "rejected_other": "Votre choix n'a pas pu être enregistré.",
        "receipt_heading": "Votre reçu",
        "receipt_intro": (
            "Conservez ce reçu. Il est signé par la passerelle de consentement : vous, ou toute personne à "
            "qui vous le montrez, pouvez vérifier qu'il est authentique."
        ),
        "receipt_download": "Télécharger le reçu (JSON)",
        "history_heading": "Tous vos choix dans cette réunion",
        "history_empty": "Rien pour l'instant.",
        "col_when": "Quand",
        "col_uses": "Usages",
        "col_choice": "Choix",
        "col_receipt": "Reçu",
        "choice_given": "Accepté",
        "choice_refused": "Refusé",
        "choice_withdrawn": "Retiré",
        "choice_rejected": "Non enregistré",
        "record": "Enregistrement",
        "ledger_entry": "Entrée du registre",
        "signed_by": "Signé avec la clé",
        "refused_title": "Ce lien ne peut pas être utilisé",
        "refused_text": (
            "Il a peut-être expiré, ou il a été copié de façon incomplète. Demandez un nouveau lien dans la "
            "réunion. Rien n'a été modifié."
        ),
        "error_title": "Une erreur s'est produite",
        "error_text": "Rien n'a été modifié. Veuillez réessayer dans un instant.",
    },
}

LANGUAGE_NAMES: Mapping[str, str] = {"en": "English", "fr": "Français", "cy": "Cymraeg", "de": "Deutsch"}


def words(lang: str) -> Mapping[str, str]:
    """The page's words in ``lang``, or English."""
    return TEXT.get(lang.split("-")[0], TEXT["en"])


def negotiate(query: str | None, accept: str | None, offered: list[str]) -> str:
    """``?lang=`` if offered, else the best ``Accept-Language`` match, else the policy's first language."""
    if query in offered:
        return query
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept or "").split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        ranked.append((-q, i, tag.strip()))
    for neg_q, _, tag in sorted(ranked):
        if neg_q >= 0:
            break
        for candidate in (tag, tag.split("-")[0].lower()):
            if candidate in offered:
                return candidate
    return offered[0]

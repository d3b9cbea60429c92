//! Chat text: a word list with a Zipf-like frequency, templates, emojis and a few links, so
//! the database compresses about as well as a real one.

use rand::Rng;

use crate::rng;

pub(crate) const GIVEN_NAMES: &[&str] = &[
    "Anna", "Ben", "Carla", "David", "Elena", "Felix", "Grace", "Hugo", "Ines", "Jonas", "Kim",
    "Lena", "Marco", "Nina", "Omar", "Paula", "Quentin", "Rosa", "Sam", "Tara", "Umar", "Vera",
    "Will", "Xenia", "Yusuf", "Zoe", "Aisha", "Bruno", "Chloe", "Diego", "Emma", "Farid", "Gina",
    "Hannah", "Ivan", "Julia", "Karim", "Laura", "Mia", "Noah", "Olga", "Pedro", "Rita", "Sofia",
    "Tom", "Lucas", "Maya", "Leo", "Priya", "Raj", "Mei", "Chen", "Fatima", "Ali", "Sara", "Mum",
    "Dad",
];

pub(crate) const FAMILY_NAMES: &[&str] = &[
    "Smith",
    "Müller",
    "Garcia",
    "Rossi",
    "Nowak",
    "Silva",
    "Kim",
    "Nguyen",
    "Patel",
    "Cohen",
    "Dubois",
    "Jansen",
    "Larsen",
    "Popescu",
    "Kowalski",
    "Yilmaz",
    "Schmidt",
    "Fernández",
    "Bianchi",
    "Novak",
    "Ivanova",
    "Haddad",
    "Okafor",
    "Tanaka",
    "Wong",
    "Brown",
    "Wilson",
    "Taylor",
    "Meyer",
    "Costa",
];

/// Common chat words, most frequent first.
const WORDS: &[&str] = &[
    "i",
    "you",
    "the",
    "to",
    "a",
    "and",
    "it",
    "is",
    "that",
    "in",
    "we",
    "me",
    "for",
    "so",
    "my",
    "of",
    "be",
    "on",
    "have",
    "just",
    "do",
    "at",
    "was",
    "are",
    "not",
    "what",
    "can",
    "but",
    "with",
    "all",
    "no",
    "yes",
    "ok",
    "get",
    "go",
    "like",
    "will",
    "if",
    "know",
    "now",
    "good",
    "this",
    "there",
    "up",
    "think",
    "they",
    "time",
    "see",
    "when",
    "how",
    "tomorrow",
    "today",
    "one",
    "going",
    "out",
    "home",
    "still",
    "really",
    "come",
    "back",
    "then",
    "want",
    "did",
    "about",
    "need",
    "too",
    "here",
    "later",
    "tonight",
    "love",
    "thanks",
    "new",
    "work",
    "right",
    "sure",
    "maybe",
    "soon",
    "next",
    "week",
    "day",
    "night",
    "morning",
    "dinner",
    "lunch",
    "coffee",
    "call",
    "phone",
    "car",
    "train",
    "bus",
    "late",
    "early",
    "weekend",
    "party",
    "birthday",
    "photo",
    "video",
    "game",
    "movie",
    "show",
    "book",
    "school",
    "kids",
    "dog",
    "cat",
    "food",
    "pizza",
    "beer",
    "wine",
    "gym",
    "run",
    "walk",
    "beach",
    "park",
    "city",
    "trip",
    "flight",
    "hotel",
    "ticket",
    "money",
    "pay",
    "price",
    "shop",
    "buy",
    "bring",
    "meet",
    "wait",
    "leave",
    "arrive",
    "sleep",
    "tired",
    "happy",
    "sorry",
    "funny",
    "crazy",
    "great",
    "nice",
    "cool",
    "awesome",
    "amazing",
    "weird",
    "sick",
    "better",
    "worse",
    "first",
    "last",
    "long",
    "little",
    "big",
    "small",
    "old",
    "young",
    "cold",
    "hot",
    "rain",
    "sun",
    "weather",
    "news",
    "message",
    "picture",
    "address",
    "number",
    "office",
    "meeting",
    "boss",
    "project",
    "deadline",
    "email",
    "doctor",
    "appointment",
    "mum",
    "dad",
    "sister",
    "brother",
    "friend",
    "family",
    "grandma",
    "holiday",
    "summer",
    "winter",
    "christmas",
    "football",
    "match",
    "score",
    "team",
    "music",
    "concert",
    "song",
    "festival",
    "restaurant",
    "table",
    "reservation",
    "kitchen",
    "garden",
    "house",
    "flat",
    "rent",
    "keys",
    "door",
    "window",
    "problem",
    "idea",
    "question",
    "answer",
    "plan",
    "change",
    "forgot",
    "remember",
    "check",
    "send",
    "sent",
    "told",
    "said",
    "asked",
    "heard",
    "saw",
    "found",
    "lost",
    "won",
    "made",
    "cooked",
    "cleaned",
    "fixed",
    "broke",
    "finished",
];

const EMOJIS: &[&str] = &[
    "😂", "❤️", "👍", "😍", "🙏", "😊", "😭", "🎉", "🔥", "😅", "🤣", "😘", "👌", "🙈", "😎", "🥳",
    "😴", "🤔", "😢", "💪", "✈️", "🍕", "🍻", "☀️", "🎂",
];

const SHORT: &[&str] = &[
    "ok",
    "Ok 👍",
    "okay",
    "haha",
    "hahaha",
    "lol",
    "yes",
    "yes!",
    "no",
    "nope",
    "sure",
    "thanks!",
    "Thank you so much ❤️",
    "on my way",
    "omw",
    "see you soon",
    "good night",
    "Good morning ☀️",
    "👍",
    "😂😂😂",
    "❤️",
    "nice",
    "cool",
    "miss you",
    "call me when you can",
    "just landed ✈️",
    "where are you?",
    "running 10 min late, sorry",
    "Happy birthday!! 🎉🎂",
    "k",
    "👍👍",
    "sounds good",
    "perfect",
    "np",
    "see you there",
    "wow",
    "same",
    "true",
    "exactly",
    "🙈",
    "can't talk now",
    "at work, call you later",
    "home safe",
    "love you",
    "Congrats!! 🥳",
];

const PLACES: &[&str] = &[
    "dinner",
    "the gym",
    "the office",
    "the party",
    "lunch",
    "the beach",
    "the cinema",
    "the match",
    "the concert",
    "grandma's",
    "the park",
    "the station",
    "the airport",
    "the market",
    "brunch",
];

const WHEN: &[&str] = &[
    "tonight",
    "tomorrow",
    "on Saturday",
    "on Sunday",
    "at 7",
    "at 8:30",
    "next week",
    "later",
    "after work",
    "this weekend",
    "in 10 minutes",
    "on Friday",
];

fn pick<'a>(rng: &mut impl Rng, list: &[&'a str]) -> &'a str {
    list[rng.gen_range(0..list.len() as u32) as usize]
}

/// A word, frequent words much more often than rare ones (index ∝ u³: Zipf-like).
fn word(rng: &mut impl Rng) -> &'static str {
    const SCALE: u128 = 1 << 16;
    let u = rng.gen_range(0..SCALE);
    let i = WORDS.len() as u128 * u * u * u / (SCALE * SCALE * SCALE);
    WORDS[i as usize]
}

fn sentence(rng: &mut impl Rng, min: u32, max: u32) -> String {
    let n = rng.gen_range(min..=max);
    let mut s = String::new();
    for i in 0..n {
        let w = word(rng);
        if i == 0 {
            let mut c = w.chars();
            if let Some(first) = c.next() {
                s.extend(first.to_uppercase());
                s.push_str(c.as_str());
            }
        } else {
            s.push(' ');
            s.push_str(w);
        }
    }
    s.push_str(match rng.gen_range(0..10u32) {
        0..=4 => "",
        5..=7 => ".",
        8 => "?",
        _ => "!",
    });
    s
}

fn link(rng: &mut impl Rng) -> String {
    match rng.gen_range(0..5u32) {
        0 => format!("https://www.youtube.com/watch?v={}", rng::token(rng, 11)),
        1 => format!("https://maps.app.goo.gl/{}", rng::token(rng, 17)),
        2 => format!("https://www.instagram.com/p/{}/", rng::token(rng, 11)),
        3 => format!("https://open.spotify.com/track/{}", rng::token(rng, 22)),
        _ => {
            let w = word(rng);
            format!("https://en.wikipedia.org/wiki/{}", w)
        }
    }
}

/// One message's text.
pub(crate) fn message(rng: &mut impl Rng) -> String {
    let mut s = match rng.gen_range(0..100u32) {
        0..=29 => pick(rng, SHORT).to_string(),
        30..=41 => format!(
            "Hey {}, are you coming to {} {}?",
            pick(rng, GIVEN_NAMES),
            pick(rng, PLACES),
            pick(rng, WHEN)
        ),
        42..=47 => format!("{} {}?", pick(rng, PLACES), pick(rng, WHEN)),
        48..=51 => format!("{} says hi", pick(rng, GIVEN_NAMES)),
        52..=54 => format!("{} {}", sentence(rng, 2, 6), link(rng)),
        55..=59 => {
            let parts = rng.gen_range(2..=5u32);
            (0..parts)
                .map(|_| sentence(rng, 5, 16))
                .collect::<Vec<_>>()
                .join(" ")
        }
        _ => sentence(rng, 2, 12),
    };
    if rng.gen_bool(0.25) {
        s.push(' ');
        for _ in 0..rng.gen_range(1..=3u32) {
            s.push_str(pick(rng, EMOJIS));
        }
    }
    s
}

/// A caption for a photo or video (or `None`, most of the time).
pub(crate) fn caption(rng: &mut impl Rng) -> Option<String> {
    rng.gen_bool(0.2).then(|| match rng.gen_range(0..3u32) {
        0 => format!("Look at this {}", pick(rng, EMOJIS)),
        1 => format!("{} {}", pick(rng, PLACES), pick(rng, WHEN)),
        _ => sentence(rng, 2, 8),
    })
}

/// The original name of a shared document.
pub(crate) fn document_name(rng: &mut impl Rng) -> String {
    let stem = match rng.gen_range(0..6u32) {
        0 => "Invoice",
        1 => "Boarding pass",
        2 => "Contract",
        3 => "Tickets",
        4 => "Menu",
        _ => "Scan",
    };
    format!("{stem} {}.pdf", rng.gen_range(1..1000u32))
}

/// A WhatsApp "about" status line.
pub(crate) fn status(rng: &mut impl Rng) -> String {
    match rng.gen_range(0..4u32) {
        0 => "Hey there! I am using WhatsApp.".to_string(),
        1 => "Available".to_string(),
        2 => format!("{} {}", sentence(rng, 2, 5), pick(rng, EMOJIS)),
        _ => pick(rng, EMOJIS).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_varied_and_non_empty() {
        let mut rng = rng::stream(3, 3);
        let msgs: Vec<String> = (0..500).map(|_| message(&mut rng)).collect();
        assert!(msgs.iter().all(|m| !m.is_empty()));
        let distinct: std::collections::HashSet<_> = msgs.iter().collect();
        assert!(distinct.len() > 200);
        assert!(msgs.iter().any(|m| m.contains("https://")));
    }
}

"""PubMedVision's prompts, verbatim (Chen et al. 2024, "HuatuoGPT-Vision", section 3.2 and appendices C, D, F, I).

- `MLLM_PROMPT`: Figure 4, the "unblinded" reformatting prompt (images + context -> JSON with
  ``Image_description``, ``QA-query``, ``QA-answer``). The paper's ``{{ }}`` are Python format
  escapes: the model sees single braces. ``{medical_images}`` is where the images go; here the
  images are sent as image parts before the text, so the placeholder is rendered as nothing.
- `SCENARIOS`: the ten QA scenarios of Appendix D (Figures 9-18), ``{QA_scenario_prompt}``.
- `SINGLE_IMAGE_QUESTIONS` / `MULTI_IMAGE_QUESTIONS`: the alignment-VQA questions of Appendix C
  (Figures 7 and 8). Figure 7 is an image in our copy of the paper; its text is taken from the
  arXiv v2 text of the same appendix (where it is Figure 6), item for item.
- `LLM_PROMPT`: Figure 19, the text-only "blinded" reformatter (LLaVA-Med's method).
- `DESCRIPTION_QUERY`: Table 12's query for the caption datasets (native, LLM, distill).
- `CRITERIA`: Figure 20's four expert criteria, 1-5 (the body text calls the fourth "Usefulness").

Changing any text here changes what the model is asked: bump `PROMPT_VERSION` (it is part of the
cache key, so old answers are not reused for a new prompt).
"""

from __future__ import annotations

PROMPT_VERSION = "pubmedvision-v1"

# Figure 4 (left). Line breaks as the paper's paragraphs.
MLLM_PROMPT = """{medical_images}
Please complete the following tasks based on the medical images and reference information provided by me.
1. Generate a detailed and professional description (Image_description). The description must reflect your professionalism and provide as many details as possible from the image. The more comprehensive and precise, the better.
2. {QA_scenario_prompt}
The contextual text is marked by <reference>. You need to refer to it to ensure the accuracy of the content you generate, but do not mention the existence of this reference information when generating data.
Your reply must be in JSON format, formatted as
{{ "Image_description" : ..., "QA-query" : ..., "QA-answer" : ... }}
<reference>
{contextual_text}
</reference>"""

# Appendix D, Figures 9-18: (name, prompt), in the order of the figures.
SCENARIOS: tuple[tuple[str, str], ...] = (
    ("Standard Q&A",
     "You need to generate a question-and-answer pair based on this image. The question should be designed to test other models' "
     "understanding of this medical image; it should be phrased simply and conversationally. However, your response should be "
     "professional, showcasing your understanding of the medical image by providing useful information derived from the image and "
     "detailed analysis. The reply should offer detailed and rich useful information."),
    ("Doctor and Patient's Family",
     "You need to generate a question-and-answer pair based on this image. You need to play the roles of a doctor and a patient's family "
     "member, discussing the results shown in the image. The doctor should explain the imaging findings in layman's terms and answer any "
     "questions posed by the family member. The family member may inquire about the cause of the disease, severity, treatment options, "
     "and related content. The doctor should answer patiently to ensure that the family member fully understands the condition."),
    ("Doctor to Doctor",
     "You need to generate a question-and-answer pair based on this image. This pair should be a professional discussion between doctors "
     "about the image. You need to mimic a doctor's tone in asking and answering questions. The response should provide detailed and rich "
     "useful information derived from the image."),
    ("Intern and Specialist Doctor",
     "You need to generate a question-and-answer pair based on this image. You should adopt the tone of an intern to ask questions and a "
     "specialist doctor to answer them. The answers should provide useful information derived from the image and give a detailed "
     "analysis. The response should provide detailed and rich useful information."),
    ("Medical Teacher and Student",
     "You need to generate a question-and-answer pair based on this image. You need to act as a medical teacher and a student, engaging "
     "in an educational interaction about the image. The teacher should pose questions, asking the student to analyze the image and "
     "propose possible diagnoses. The student should answer the questions and explain their observations and reasoning process."),
    ("Senior Doctor and Intern",
     "You need to generate a question-and-answer pair based on this image. You should act as a senior doctor and an intern, discussing "
     "the image. The senior doctor should pose relevant questions to test the intern's observational and analytical skills concerning "
     "the image, while the intern should respond and explain their viewpoint."),
    ("Doctor and Difficult Patient",
     "You need to generate a question-and-answer pair based on this image. You need to act as a doctor communicating with a patient who is "
     "skeptical about their diagnosis. The patient may pose a series of tricky questions, questioning the doctor's explanations and "
     "treatment suggestions. The doctor needs to use the imaging data patiently and explain the condition in an easy-to-understand "
     "manner, addressing all the patient's queries to alleviate their concerns and build trust."),
    ("Evaluator and AI Model",
     "You need to generate a question-and-answer pair based on this image. You need to act as a member of a quality control team, "
     "focusing on assessing an AI model's visual capabilities in handling complex medical images. Team members should inquire about "
     "subtle details in the image."),
    ("AI Model Assisting Doctor",
     "You need to generate a question-and-answer pair based on this image. You need to act as a doctor using an AI model to analyze a "
     "medical image to better understand a patient's condition. The doctor should ask specific questions about structures, "
     "abnormalities, and potential clinical significance visible on the image. The AI model should provide detailed analyses based on "
     "its algorithms but not make final clinical diagnoses. The doctor will use the information provided by the AI model to aid their "
     "diagnostic decision-making process."),
    ("AI Model Assisting Patient",
     "You need to generate a question-and-answer pair based on this image. You need to act as an AI model interacting with a patient who "
     "has questions about visible content on their medical image. The patient may be curious or confused about certain structures or "
     "markings on the image and seeks clear explanations. The AI model should explain specific details such as tissue density, shape, or "
     "any abnormal areas' potential meanings, maintaining simplicity and avoiding excessive medical jargon. The AI model's response "
     "should aim to provide educational information to help the patient better understand their imaging results, emphasizing that "
     "final interpretations and diagnoses must be done by a professional doctor."),
)
SCENARIO_PROMPTS: dict[str, str] = dict(SCENARIOS)

# Appendix C, Figure 7 (single image) and Figure 8 (several images).
SINGLE_IMAGE_QUESTIONS: tuple[str, ...] = (
    "Please describe this picture.",
    "Can you describe the image for me?",
    "What details stand out in this image?",
    "Could you provide a detailed description of what is shown in the picture?",
    "What is the main focus of this photograph?",
    "Describe the composition and the subjects in this picture.",
    "Explain the visual content of the image.",
    "Analyze the image in a comprehensive and detailed manner.",
    "Write a detailed description of the given image.",
    "What is this photo about?",
    "What is depicted in the image?",
)
MULTI_IMAGE_QUESTIONS: tuple[str, ...] = (
    "Please describe these pictures.",
    "Can you describe the images for me?",
    "What details stand out in these images?",
    "Could you provide a detailed description of what is shown in the pictures?",
    "What are the main focuses of these photographs?",
    "Describe the composition and the subjects in these pictures.",
    "Explain the visual content of the images.",
    "Analyze the images in a comprehensive and detailed manner.",
    "Write a detailed description of the given images.",
    "What are these photos about?",
    "What is depicted in the images?",
)

# Figure 19: the text-only reformatter ("LLM-Reformatted"); {image_context_information}: caption + inline mentions.
LLM_PROMPT = """You have been provided with textual context information of images from a biomedical research paper, but you do not have access to the actual image. You need to respond to the following question based on this image's context information.

In your response, avoid using phrases like 'mentioned', 'caption', or 'context'. Instead, describe the information as if it were directly observed 'in the image'. Answer responsibly, avoiding any overconfidence, and refrain from giving medical advice or diagnostic information. Encourage the user to consult a healthcare professional for further advice.

<Image Context Information>: {image_context_information}

<Question>: Please provide a description of the given medical image.

Please respond to the <Question> as instructed."""

# Table 12 / section 4.3: the query of the four caption datasets (and GPT4v-Distill's whole prompt).
DESCRIPTION_QUERY = "Please provide a description of the given medical image."

# Figure 20, Dataset Scoring Guidelines: (key, name, guideline); each scored 1 to 5.
CRITERIA: tuple[tuple[str, str, str], ...] = (
    ("accuracy", "Accuracy",
     "The rating should be based on whether the description accurately reflects the medical features and information in the image. "
     "A score of 5 indicates complete accuracy, while a score of 1 indicates complete inaccuracy."),
    ("relevance", "Relevance",
     "The rating should be based on the degree of tight association between the described content and the key medical features and "
     "information in the image, and whether it successfully avoids the depiction of irrelevant details in the image. A score of 5 "
     "indicates high relevance, while a score of 1 indicates complete irrelevance."),
    ("completeness", "Completeness",
     "The rating should be based on whether the description includes all the key medical features and information in the image. "
     "A score of 5 indicates complete completeness, while a score of 1 indicates significant omissions."),
    ("practicality", "Practicality",
     "The rating should be based on the extent to which the description helps with medical decision-making, diagnosis, and treatment "
     "planning. A score of 5 indicates high practicality with in-depth descriptions, while a score of 1 indicates that the description "
     "is superficial and not practical."),
)
CRITERION_KEYS: tuple[str, ...] = tuple(key for key, _, _ in CRITERIA)

# The four ways of building a caption (Table 12) -> what the model is shown.
MODES: dict[str, str] = {
    "native": "the context text itself is the caption (no model call)",
    "llm": "text-only LLM, context without the images (Figure 19, 'blinded')",
    "distill": "vision LLM, images without the context (Table 12, GPT4v-Distill)",
    "mllm": "vision LLM, images and context (Figure 4, PubMedVision's method)",
}


def mllm_prompt(scenario: str, context: str) -> str:
    """Figure 4 for one record: the scenario's prompt and the context text filled in."""
    return MLLM_PROMPT.format(medical_images="", QA_scenario_prompt=SCENARIO_PROMPTS[scenario], contextual_text=context).lstrip("\n")


def llm_prompt(context: str) -> str:
    """Figure 19 for one record."""
    return LLM_PROMPT.format(image_context_information=context)
